//! Loading the indexes of closed segments, off the shard's core.
//!
//! A segment from an earlier run keeps its `.index` and `.timeindex` on
//! disk until a lookup first needs them (a cold read, a ListOffsets by
//! time, retention or the cleaner looking at its timestamps). Reading them
//! goes through [`crate::storage::Storage::read_file`], which the real disk
//! serves from the blocking pool, so the shard's other partitions keep
//! being served meanwhile. No borrow of the log's state is held across that
//! wait: the files to read are taken under a short borrow, read, and the
//! result installed under another, into the segment only if it is still the
//! same file (see [`Segment::install_indexes`]). A walk over the segments
//! that meets one not loaded yet returns [`IndexesNotLoaded`]; its caller
//! loads that segment and walks again.
//!
//! Two tasks may load the same segment at once; the second install finds
//! the indexes in memory and drops its copy.

use crate::segment::{IndexLoad, Segment};
use crate::storage::Storage;
use crate::types::Offset;

use super::PartitionLog;

/// A walk over a log's segments met the segment at this base offset with
/// its indexes still on disk: load them with
/// [`PartitionLog::load_segment_indexes`] and walk again.
#[derive(Clone, Copy, Debug)]
pub(super) struct IndexesNotLoaded(pub(super) Offset);

impl<S: Storage> PartitionLog<S> {
    /// Loads the indexes of the segment that may hold `offset` (the last one
    /// starting at or before it, else the first), if they are on disk.
    /// Returns at once, without yielding, when they are in memory.
    pub(super) async fn load_indexes_holding(&self, offset: Offset) {
        let load = {
            let state = self.state.borrow();
            let segment = state
                .segments
                .range(..=offset)
                .next_back()
                .or_else(|| state.segments.iter().next())
                .map(|(_, segment)| segment);
            segment.and_then(Segment::index_load)
        };
        if let Some(load) = load {
            self.install_loaded(load).await;
        }
    }

    /// Loads the indexes of every segment that has them on disk.
    pub(super) async fn load_all_indexes(&self) {
        let loads: Vec<IndexLoad<S>> = self
            .state
            .borrow()
            .segments
            .values()
            .filter_map(Segment::index_load)
            .collect();
        for load in loads {
            self.install_loaded(load).await;
        }
    }

    /// Loads the indexes of the segment at `base`, if it still exists and
    /// has them on disk.
    pub(super) async fn load_segment_indexes(&self, base: Offset) {
        let load = self
            .state
            .borrow()
            .segments
            .get(&base)
            .and_then(Segment::index_load);
        if let Some(load) = load {
            self.install_loaded(load).await;
        }
    }

    async fn install_loaded(&self, load: IndexLoad<S>) {
        let base = load.base_offset();
        let loaded = load.read(&self.storage).await;
        if let Some(segment) = self.state.borrow_mut().segments.get_mut(&base) {
            segment.install_indexes(loaded);
        }
    }
}
