//! Copy-on-write containers for pickers: a policy edits them in place, and a
//! picker built from them shares every part the edit did not touch, so that
//! publishing a new picker after one endpoint changed costs far less than a
//! copy of every endpoint, and a pick reads them without a lock.

use std::collections::HashMap;
use std::sync::Arc;

use super::SubchannelId;

/// Entries per chunk of a [`ChunkedVec`].
const CHUNK: usize = 128;

/// A vector in chunks of 128 shared entries. Cloning it (to build a picker)
/// copies one pointer per chunk; an edit copies the one or two chunks it
/// touches if a picker still shares them. Indexing is two loads.
#[derive(Debug)]
pub(crate) struct ChunkedVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Clone for ChunkedVec<T> {
    fn clone(&self) -> Self {
        ChunkedVec {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> ChunkedVec<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.last_mut().expect("a chunk was pushed");
        Arc::make_mut(last).push(value);
        self.len += 1;
    }

    /// Replaces the entry at `index` (which must exist), returning the old one.
    pub(crate) fn set(&mut self, index: usize, value: T) -> T {
        let chunk = Arc::make_mut(&mut self.chunks[index / CHUNK]);
        std::mem::replace(&mut chunk[index % CHUNK], value)
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last_mut()?;
        let value = Arc::make_mut(last).pop();
        if last.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        value
    }

    /// Removes the entry at `index` (which must exist), moving the last one
    /// into its place.
    pub(crate) fn swap_remove(&mut self, index: usize) -> T {
        let last = self.pop().expect("swap_remove on an empty ChunkedVec");
        if index == self.len {
            last
        } else {
            self.set(index, last)
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }
}

/// Shards of a [`SubchannelMap`].
const SHARDS: usize = 64;

/// A map from subchannel to value in 64 shared shards: an insert or removal
/// copies the 64 shard pointers and one shard if a picker still shares them;
/// a lookup is one hash into one shard.
#[derive(Debug)]
pub(crate) struct SubchannelMap<V> {
    shards: Vec<Arc<HashMap<SubchannelId, V>>>,
}

impl<V> Clone for SubchannelMap<V> {
    fn clone(&self) -> Self {
        SubchannelMap {
            shards: self.shards.clone(),
        }
    }
}

impl<V: Clone> Default for SubchannelMap<V> {
    fn default() -> Self {
        SubchannelMap {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
        }
    }
}

fn shard_of(id: SubchannelId) -> usize {
    // splitmix64's finalizer: ids that differ in any bit land apart.
    let mut x = id.raw().wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((x ^ (x >> 31)) as usize) % SHARDS
}

impl<V: Clone> SubchannelMap<V> {
    pub(crate) fn get(&self, id: SubchannelId) -> Option<&V> {
        self.shards[shard_of(id)].get(&id)
    }

    pub(crate) fn insert(&mut self, id: SubchannelId, value: V) {
        Arc::make_mut(&mut self.shards[shard_of(id)]).insert(id, value);
    }

    pub(crate) fn remove(&mut self, id: SubchannelId) {
        let shard = &mut self.shards[shard_of(id)];
        if shard.contains_key(&id) {
            Arc::make_mut(shard).remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_vec_edits_leave_clones_untouched() {
        let mut list = ChunkedVec::default();
        for i in 0..300 {
            list.push(i);
        }
        let before = list.clone();
        assert_eq!(list.swap_remove(5), 5);
        assert_eq!(list.get(5), Some(&299));
        assert_eq!(list.len(), 299);
        assert_eq!(before.get(5), Some(&5));
        assert_eq!(before.len(), 300);
        // Untouched chunks stay shared.
        assert!(Arc::ptr_eq(&list.chunks[1], &before.chunks[1]));
        while list.pop().is_some() {}
        assert!(list.is_empty() && list.chunks.is_empty());
        assert_eq!(before.iter().copied().sum::<i32>(), (0..300).sum::<i32>());
    }

    #[test]
    fn subchannel_map_edits_leave_clones_untouched() {
        let mut map = SubchannelMap::default();
        for i in 0..1000 {
            map.insert(SubchannelId::from_raw(i), i);
        }
        let before = map.clone();
        map.remove(SubchannelId::from_raw(7));
        assert_eq!(map.get(SubchannelId::from_raw(7)), None);
        assert_eq!(before.get(SubchannelId::from_raw(7)), Some(&7));
        assert_eq!(map.get(SubchannelId::from_raw(999)), Some(&999));
    }
}
