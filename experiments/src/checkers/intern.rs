//! Interning: every string of the history (tenants, nodes, streams, processes, values) becomes a
//! small integer once, so the checkers' hot paths compare and index integers and never clone a
//! `String` per operation.
//!
//! Values (`tenant/producer/counter`) are not hashed as strings: the `tenant/producer` prefix is
//! interned once per producer and the counter indexes a dense per-producer table. Memory is
//! therefore a few bytes per distinct value plus one entry per producer.

use rustc_hash::FxHashMap;

/// An interned string (tenant, node, stream or process name).
pub type Sym = u32;

/// Marks "no symbol" in packed tables.
pub const NO_SYM: Sym = u32::MAX;

/// An interned value (`tenant/producer/counter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The id as an index into per-value tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A string interner: each distinct string gets the next integer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interner {
    map: FxHashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
}

impl Interner {
    /// The symbol of `s`, interning it on first sight.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = Sym::try_from(self.names.len()).expect("fewer than 2^32 distinct names");
        self.names.push(s.into());
        self.map.insert(s.into(), id);
        id
    }

    /// The symbol of `s`, if it was interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }

    /// The string of a symbol; `"?"` for [`NO_SYM`] or an unknown symbol.
    pub fn name(&self, id: Sym) -> &str {
        self.names.get(id as usize).map_or("?", |s| s)
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing was interned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A map from `u64` keys to small `Copy` values that is a plain vector while the keys are dense
/// (sequence numbers, producer counters) and falls back to a hash map for outliers, so its memory
/// stays linear in the number of entries whatever the keys are.
#[derive(Debug, Clone)]
pub struct SeqMap<V: Copy + PartialEq> {
    dense: Vec<V>,
    sparse: FxHashMap<u64, V>,
    occupied: usize,
    empty: V,
}

impl<V: Copy + PartialEq> SeqMap<V> {
    /// Keys above this are never stored densely.
    const DENSE_LIMIT: u64 = 1 << 32;

    /// An empty map; `empty` marks unused dense slots and must never be inserted.
    pub fn new(empty: V) -> Self {
        Self {
            dense: Vec::new(),
            sparse: FxHashMap::default(),
            occupied: 0,
            empty,
        }
    }

    /// The value at `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<V> {
        if let Some(v) = usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            if *v != self.empty {
                return Some(*v);
            }
        }
        if self.sparse.is_empty() {
            None
        } else {
            self.sparse.get(&key).copied()
        }
    }

    /// Inserts `value` at `key` unless the key is taken; returns the value now stored there.
    #[inline]
    pub fn get_or_insert(&mut self, key: u64, value: V) -> V {
        debug_assert!(value != self.empty);
        let len = self.dense.len() as u64;
        if key < len {
            if self.dense[key as usize] == self.empty && !self.sparse.is_empty() {
                // An outlier stored before the dense table grew over it.
                if let Some(&v) = self.sparse.get(&key) {
                    return v;
                }
            }
            let slot = &mut self.dense[key as usize];
            if *slot == self.empty {
                *slot = value;
                self.occupied += 1;
            }
            return *slot;
        }
        // Grow densely only while the table stays at most ~4x the number of entries.
        if key < Self::DENSE_LIMIT
            && key <= 4 * (self.occupied as u64 + self.sparse.len() as u64) + 1024
        {
            if let Some(&v) = self.sparse.get(&key) {
                return v;
            }
            self.dense.resize(key as usize + 1, self.empty);
            self.dense[key as usize] = value;
            self.occupied += 1;
            return value;
        }
        *self.sparse.entry(key).or_insert(value)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.occupied + self.sparse.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All entries in key order.
    pub fn iter_sorted(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        let mut sparse: Vec<(u64, V)> = self.sparse.iter().map(|(k, v)| (*k, *v)).collect();
        sparse.sort_unstable_by_key(|e| e.0);
        let empty = self.empty;
        // Sparse keys may also be below the dense length (inserted before the table grew), so
        // merge the two ordered sequences.
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter(move |(_, v)| **v != empty)
            .map(|(k, v)| (k as u64, *v));
        MergeSorted {
            a: dense.peekable(),
            b: sparse.into_iter().peekable(),
        }
    }
}

struct MergeSorted<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<V, A, B> Iterator for MergeSorted<A, B>
where
    A: Iterator<Item = (u64, V)>,
    B: Iterator<Item = (u64, V)>,
{
    type Item = (u64, V);
    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => {
                if x.0 <= y.0 {
                    self.a.next()
                } else {
                    self.b.next()
                }
            }
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// A growable array stored in fixed-size pages: growing never copies or doubles, so a table of
/// millions of entries costs its size once (no transient 1.5x peak while a `Vec` reallocates).
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pages: Vec<Box<[T]>>,
    len: usize,
}

impl<T> Default for Paged<T> {
    fn default() -> Self {
        Self {
            pages: Vec::new(),
            len: 0,
        }
    }
}

/// Entries per page of a [`Paged`] (a power of two).
const PAGE: usize = 1 << 14;

impl<T: Clone> Paged<T> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Grows to `len` entries: new pages start as `blank`, new entries become `fill(index)`.
    pub fn grow_to(&mut self, len: usize, blank: &T, fill: impl Fn(usize) -> T) {
        while self.pages.len() * PAGE < len {
            self.pages
                .push(vec![blank.clone(); PAGE].into_boxed_slice());
        }
        for i in self.len..len {
            self.pages[i / PAGE][i % PAGE] = fill(i);
        }
        self.len = self.len.max(len);
    }

    /// The entry at `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        (i < self.len).then(|| &self.pages[i / PAGE][i % PAGE])
    }

    /// All entries in index order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.pages.iter().flat_map(|p| p.iter()).take(self.len)
    }
}

impl<T> std::ops::Index<usize> for Paged<T> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        assert!(i < self.len, "index {i} out of {}", self.len);
        &self.pages[i / PAGE][i % PAGE]
    }
}

impl<T> std::ops::IndexMut<usize> for Paged<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "index {i} out of {}", self.len);
        &mut self.pages[i / PAGE][i % PAGE]
    }
}

/// What the interner knows about one value.
#[derive(Clone, Copy, Debug)]
struct ValueInfo {
    /// Producer index, or [`NO_SYM`] for a value that is not `tenant/producer/counter`.
    producer: u32,
    /// The counter, or for raw values the index into `raw_names`.
    counter: u64,
    /// Tenant prefix (symbol in the tenants interner), or [`NO_SYM`].
    tenant: Sym,
}

#[derive(Debug, Clone)]
struct Producer {
    /// `tenant/producer`, the value without its counter.
    prefix: Box<str>,
    tenant: Sym,
    values: SeqMap<u32>,
    /// The next free id of this producer's current block of ids, and the block's end.
    next: u32,
    end: u32,
    /// Size of the next block.
    block: u32,
}

/// Marks an id reserved in a producer's block but not (yet) used.
const GAP: u32 = u32::MAX - 1;

/// Largest block of ids reserved for one producer. A producer's values get consecutive ids
/// within a block, so a read of one tenant's stream walks the per-value tables almost
/// sequentially instead of jumping between tenants. Blocks double from 4 up to this size, so
/// at most half of the id space is ever unused.
const MAX_BLOCK: u32 = 64;

/// All interned names of one history.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Tenant ids (from operations and from value prefixes).
    pub tenants: Interner,
    /// Node or endpoint names.
    pub nodes: Interner,
    /// Stream or key names.
    pub streams: Interner,
    /// Client process names.
    pub processes: Interner,
    /// Client zones (where a load operation's client stood).
    pub zones: Interner,
    producers: Vec<Producer>,
    producer_index: FxHashMap<Box<str>, u32>,
    values: Vec<ValueInfo>,
    raw_index: FxHashMap<Box<str>, u32>,
    raw_names: Vec<Box<str>>,
    distinct: usize,
}

/// Splits `tenant/producer/counter` into `("tenant/producer", counter)` when the counter is a
/// canonical decimal `u64` (so the value renders back byte for byte).
#[inline]
pub(crate) fn split_value(value: &str) -> Option<(&str, u64)> {
    // Byte searches: the counter is a few bytes at the end, the tenant a few at the start.
    let slash = value.bytes().rposition(|b| b == b'/')?;
    let (prefix, digits) = (&value[..slash], &value[slash + 1..]);
    let first = prefix.bytes().position(|b| b == b'/')?;
    if first == 0 || first + 1 == prefix.len() {
        return None;
    }
    let bytes = digits.as_bytes();
    if bytes.is_empty() || bytes.len() > 20 || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((prefix, n))
}

impl Symbols {
    /// An empty symbol table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of a value, interning it on first sight.
    #[inline]
    pub fn intern_value(&mut self, value: &str) -> ValueId {
        if let Some((prefix, counter)) = split_value(value) {
            let p = match self.producer_index.get(prefix) {
                Some(&p) => p,
                None => self.new_producer(prefix),
            };
            let producer = &mut self.producers[p as usize];
            if let Some(id) = producer.values.get(counter) {
                return ValueId(id);
            }
            if producer.next == producer.end {
                let start = u32::try_from(self.values.len())
                    .ok()
                    .filter(|s| s.checked_add(producer.block).is_some_and(|e| e < GAP))
                    .expect("fewer than 2^32 distinct values");
                self.values.resize(
                    (start + producer.block) as usize,
                    ValueInfo {
                        producer: GAP,
                        counter: 0,
                        tenant: producer.tenant,
                    },
                );
                producer.next = start;
                producer.end = start + producer.block;
                producer.block = (producer.block * 2).min(MAX_BLOCK);
            }
            let id = producer.next;
            producer.next += 1;
            producer.values.get_or_insert(counter, id);
            self.values[id as usize] = ValueInfo {
                producer: p,
                counter,
                tenant: producer.tenant,
            };
            self.distinct += 1;
            return ValueId(id);
        }
        self.intern_raw(value)
    }

    #[cold]
    fn new_producer(&mut self, prefix: &str) -> u32 {
        let tenant_name = prefix.split('/').next().unwrap_or(prefix);
        let tenant = self.tenants.intern(tenant_name);
        let p = u32::try_from(self.producers.len()).expect("fewer than 2^32 producers");
        self.producers.push(Producer {
            prefix: prefix.into(),
            tenant,
            values: SeqMap::new(u32::MAX),
            next: 0,
            end: 0,
            block: 4,
        });
        self.producer_index.insert(prefix.into(), p);
        p
    }

    #[cold]
    fn intern_raw(&mut self, value: &str) -> ValueId {
        if let Some(&id) = self.raw_index.get(value) {
            return ValueId(id);
        }
        let id = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        let tenant = match value.split_once('/') {
            Some((t, _)) if !t.is_empty() => self.tenants.intern(t),
            _ => NO_SYM,
        };
        self.values.push(ValueInfo {
            producer: NO_SYM,
            counter: self.raw_names.len() as u64,
            tenant,
        });
        self.raw_names.push(value.into());
        self.raw_index.insert(value.into(), id);
        self.distinct += 1;
        ValueId(id)
    }

    /// Size of the value id space: every [`ValueId`] is below it. Ids are reserved in blocks
    /// per producer, so some ids below it may be unused; see [`Symbols::distinct_values`].
    pub fn value_count(&self) -> usize {
        self.values.len()
    }

    /// Number of distinct values interned.
    pub fn distinct_values(&self) -> usize {
        self.distinct
    }

    /// The tenant prefix of a value ([`NO_SYM`] when it has none).
    #[inline]
    pub fn value_tenant(&self, v: ValueId) -> Sym {
        self.values[v.index()].tenant
    }

    /// The value's producer index and counter, when it is `tenant/producer/counter`.
    pub fn value_counter(&self, v: ValueId) -> Option<(u32, u64)> {
        let info = self.values[v.index()];
        (info.producer != NO_SYM && info.producer != GAP).then_some((info.producer, info.counter))
    }

    /// The value as written in the history.
    pub fn value_name(&self, v: ValueId) -> String {
        let info = self.values[v.index()];
        if info.producer == GAP {
            "?".to_string()
        } else if info.producer == NO_SYM {
            self.raw_names[info.counter as usize].to_string()
        } else {
            format!(
                "{}/{}",
                self.producers[info.producer as usize].prefix, info.counter
            )
        }
    }

    /// Number of producers (`tenant/producer` prefixes).
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// A producer's values, in counter order.
    pub fn producer_values(&self, producer: u32) -> impl Iterator<Item = (u64, ValueId)> + '_ {
        self.producers[producer as usize]
            .values
            .iter_sorted()
            .map(|(c, v)| (c, ValueId(v)))
    }

    /// The name of a tenant symbol, or `"?"`.
    pub fn tenant(&self, s: Sym) -> &str {
        self.tenants.name(s)
    }

    /// The name of a node symbol, or `"?"`.
    pub fn node(&self, s: Sym) -> &str {
        self.nodes.name(s)
    }

    /// The name of a stream symbol, or `"?"`.
    pub fn stream(&self, s: Sym) -> &str {
        self.streams.name(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut s = Symbols::new();
        for v in [
            "t1/p1/0",
            "t1/p1/7",
            "t2/a/b/99",
            "t1/p1/007",
            "plain",
            "/x/1",
            "t/p/",
            "t/p/18446744073709551615",
            "t/p/18446744073709551616",
        ] {
            let id = s.intern_value(v);
            assert_eq!(s.value_name(id), v);
            assert_eq!(s.intern_value(v), id);
        }
        let id = s.intern_value("t2/a/b/99");
        assert_eq!(s.tenant(s.value_tenant(id)), "t2");
        assert_eq!(s.value_counter(id).map(|c| c.1), Some(99));
        assert_eq!(s.distinct_values(), 9);
        assert!(s.value_count() >= 9);
        let plain = s.intern_value("plain");
        assert_eq!(s.value_tenant(plain), NO_SYM);
    }

    #[test]
    fn paged_grows_without_copying() {
        let mut p: Paged<usize> = Paged::default();
        p.grow_to(3, &0, |i| i);
        assert_eq!((p.len(), p[2]), (3, 2));
        p.grow_to(PAGE * 2 + 5, &0, |i| i * 10);
        assert_eq!(p.len(), PAGE * 2 + 5);
        assert_eq!(p[PAGE + 1], (PAGE + 1) * 10);
        assert_eq!(p[2], 2, "existing entries are kept");
        assert_eq!(p.get(PAGE * 2 + 5), None);
        assert_eq!(p.iter().count(), PAGE * 2 + 5);
        p[0] = 7;
        assert_eq!(p.iter().next(), Some(&7));
    }

    #[test]
    fn seq_map_dense_and_sparse() {
        let mut m = SeqMap::new(u32::MAX);
        assert_eq!(m.get_or_insert(5, 1), 1);
        assert_eq!(m.get_or_insert(5, 2), 1);
        assert_eq!(m.get_or_insert(1 << 40, 3), 3);
        assert_eq!(m.get_or_insert(3, 4), 4);
        assert_eq!(m.get(1 << 40), Some(3));
        assert_eq!(m.get(4), None);
        let all: Vec<_> = m.iter_sorted().collect();
        assert_eq!(all, vec![(3, 4), (5, 1), (1 << 40, 3)]);
        assert_eq!(m.len(), 3);
        // An outlier below a later dense growth is still found once.
        let mut m = SeqMap::new(u32::MAX);
        assert_eq!(m.get_or_insert(2000, 1), 1);
        for k in 0..3000 {
            m.get_or_insert(k, 2);
        }
        assert_eq!(m.get(2000), Some(1));
        assert_eq!(m.len(), 3000);
        assert_eq!(m.iter_sorted().count(), 3000);
    }
}
