//! The recovery time axis: which buckets hold data.
//!
//! Buckets are numbered from the run start. Only a bucket in which some operation was sent or
//! completed gets a cell, and the per-series counts are indexed by cell, so memory follows the
//! data and not the timestamps: one operation stamped months into the run costs one cell, not
//! months of empty buckets. The recovery checker walks the cells in time order and treats the
//! buckets between them as gaps in which no series has any operation.

use rustc_hash::FxHashMap;

/// Bucket numbers to dense cell ids, in first-seen order.
#[derive(Clone, Debug)]
pub struct BucketCells {
    ids: FxHashMap<u32, u32>,
    buckets: Vec<u32>,
    /// The two most recently used `(bucket, cell)` pairs. A history in completion order hits
    /// them for almost every operation, so the map is consulted about once per bucket.
    recent: [(u32, u32); 2],
}

/// No bucket: bucket numbers stay far below `u32::MAX` (see the facts' range check).
const EMPTY: (u32, u32) = (u32::MAX, u32::MAX);

impl Default for BucketCells {
    fn default() -> Self {
        Self {
            ids: FxHashMap::default(),
            buckets: Vec::new(),
            recent: [EMPTY; 2],
        }
    }
}

impl BucketCells {
    /// The cell of `bucket`, created on first use.
    #[inline]
    pub fn cell(&mut self, bucket: u32) -> u32 {
        if self.recent[0].0 == bucket {
            return self.recent[0].1;
        }
        if self.recent[1].0 == bucket {
            self.recent.swap(0, 1);
            return self.recent[0].1;
        }
        let cell = self.lookup(bucket);
        self.recent[1] = self.recent[0];
        self.recent[0] = (bucket, cell);
        cell
    }

    #[inline(never)]
    fn lookup(&mut self, bucket: u32) -> u32 {
        let next = self.buckets.len() as u32;
        let cell = *self.ids.entry(bucket).or_insert(next);
        if cell == next {
            self.buckets.push(bucket);
        }
        cell
    }

    /// Number of cells (buckets holding data).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket holds data.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The bucket number of `cell`.
    pub fn bucket(&self, cell: u32) -> u64 {
        u64::from(self.buckets[cell as usize])
    }

    /// Every `(bucket, cell)`, in time order.
    pub fn in_time_order(&self) -> Vec<(u64, u32)> {
        let mut out: Vec<(u64, u32)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(cell, b)| (u64::from(*b), cell as u32))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_dense_and_ordered_by_time() {
        let mut c = BucketCells::default();
        assert!(c.is_empty());
        // Completion order with one far outlier and a late straggler.
        let seen: Vec<u32> = [3, 3, 4, 3, 16_000_000, 4, 0, 3]
            .iter()
            .map(|b| c.cell(*b))
            .collect();
        assert_eq!(seen, vec![0, 0, 1, 0, 2, 1, 3, 0]);
        assert_eq!(c.len(), 4);
        assert_eq!(c.bucket(2), 16_000_000);
        assert_eq!(
            c.in_time_order(),
            vec![(0, 3), (3, 0), (4, 1), (16_000_000, 2)]
        );
    }
}
