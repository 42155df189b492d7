//! ring_hash's ring as its pickers search it: the sorted entries and a table
//! of where each range of hashes (their top bits) starts, so that finding a
//! hash's place reads one table slot and the one or two entries in its
//! range, not twelve scattered entries of a binary search over 4,096.

/// The sorted ring (each entry a hash and a position into the picker's
/// table of endpoints) and its index of top bits.
#[derive(Debug, Default)]
pub(crate) struct RingIndex {
    entries: Box<[(u64, u32)]>,
    /// `starts[b]`: the first entry whose hash's top bits are ≥ `b`;
    /// `2^bits + 1` slots, the last one the ring's length.
    starts: Box<[u32]>,
    shift: u32,
}

/// The most index bits: 65,536 ranges (256 KiB), enough for the 4,096
/// entries of the default cap; a larger ring has more entries per range,
/// which the search within a range absorbs.
const MAX_BITS: u32 = 16;

impl RingIndex {
    /// Indexes `entries`, which must be sorted by hash.
    pub(crate) fn new(entries: Box<[(u64, u32)]>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 <= w[1].0));
        // About one entry per range.
        let bits = entries
            .len()
            .next_power_of_two()
            .trailing_zeros()
            .clamp(1, MAX_BITS);
        let shift = 64 - bits;
        let ranges = 1usize << bits;
        let mut starts = Vec::with_capacity(ranges + 1);
        let mut at = 0usize;
        for range in 0..ranges as u64 {
            while at < entries.len() && (entries[at].0 >> shift) < range {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(entries.len() as u32);
        RingIndex {
            entries,
            starts: starts.into(),
            shift,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index of the first entry whose hash is ≥ `hash`, wrapping around
    /// to 0 past the last (the ring must not be empty).
    #[inline]
    pub(crate) fn lookup(&self, hash: u64) -> usize {
        let range = (hash >> self.shift) as usize;
        let from = self.starts[range] as usize;
        let to = self.starts[range + 1] as usize;
        let at = from + self.entries[from..to].partition_point(|entry| entry.0 < hash);
        if at == self.entries.len() {
            0
        } else {
            at
        }
    }

    /// The endpoint position of the entry `step` places after `start`,
    /// wrapping around (`start` and `step` below the length).
    #[inline]
    pub(crate) fn position(&self, start: usize, step: usize) -> u32 {
        let mut index = start + step;
        if index >= self.entries.len() {
            index -= self.entries.len();
        }
        self.entries[index].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(entries: &[(u64, u32)], hash: u64) -> usize {
        let at = entries.partition_point(|entry| entry.0 < hash);
        if at == entries.len() {
            0
        } else {
            at
        }
    }

    fn ring(hashes: impl IntoIterator<Item = u64>) -> Vec<(u64, u32)> {
        let mut entries: Vec<_> = hashes.into_iter().zip(0..).collect();
        entries.sort_unstable();
        entries
    }

    #[test]
    fn lookup_agrees_with_a_binary_search() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [1usize, 2, 3, 7, 100, 1024, 4096, 70_000] {
            let entries = ring((0..len).map(|_| next()));
            let index = RingIndex::new(entries.clone().into());
            let mut probes: Vec<u64> = (0..2_000).map(|_| next()).collect();
            probes.extend([0, 1, u64::MAX, u64::MAX - 1]);
            probes.extend(
                entries
                    .iter()
                    .take(50)
                    .flat_map(|e| [e.0, e.0.wrapping_add(1)]),
            );
            probes.extend(entries.iter().rev().take(5).map(|e| e.0));
            for hash in probes {
                assert_eq!(
                    index.lookup(hash),
                    reference(&entries, hash),
                    "len {len} hash {hash:#x}"
                );
            }
        }
    }

    #[test]
    fn clustered_and_equal_hashes() {
        // Every entry in one range, and duplicates.
        let entries = ring([5, 5, 5, 6, 7, 7, u64::MAX]);
        let index = RingIndex::new(entries.clone().into());
        for hash in [0, 4, 5, 6, 7, 8, u64::MAX - 1, u64::MAX] {
            assert_eq!(index.lookup(hash), reference(&entries, hash), "hash {hash}");
        }
    }

    #[test]
    fn positions_wrap_around() {
        let index = RingIndex::new(ring([10, 20, 30]).into());
        assert_eq!(index.lookup(25), 2);
        assert_eq!(index.lookup(31), 0);
        let walked: Vec<u32> = (0..3).map(|step| index.position(2, step)).collect();
        assert_eq!(walked, [2, 0, 1]);
    }
}
