//! Read-ahead for consumers catching up from disk.
//!
//! A consumer that is behind fetches a partition chunk after chunk. Without
//! read-ahead the disk idles while each response travels to the client and
//! the client asks again, so a catch-up read runs well below the disk's rate
//! (measured in `bench/RESULTS.md`). After a read that had to go to the disk,
//! the shard reads the partition's next chunk in the background; the next
//! fetch at that offset finds it in memory (or waits for the I/O already in
//! flight) and only has to verify it.
//!
//! Why not the page cache: segment data bypasses it (`O_DIRECT`), and on
//! the virtual machines fjord is benchmarked on, the first touch of pages
//! the kernel just filled costs more than the disk read itself. The chunk
//! here lands in the engine's own buffers.
//!
//! Bounded: a partition holds at most one chunk, of at most
//! [`READ_AHEAD_BYTES_MAX`]; a shard's chunks together stay within its
//! [`ReadAheadBudget`]; a chunk nobody claims is dropped after a while
//! (the shard decides when). A chunk is tied to one open segment file and
//! one position: a segment the cleaner replaced, a truncation, or a reader
//! elsewhere never gets another file's or another place's bytes. Chunks are
//! unchecked until the read that claims them verifies every batch's CRC.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use event_listener::Event;

use crate::error::Result;
use crate::segment::SegmentHandle;
use crate::storage::Storage;
use crate::types::Offset;

/// The most bytes read ahead for one partition: one large fetch read.
pub const READ_AHEAD_BYTES_MAX: usize = 8 << 20;

/// Bytes read ahead and not yet claimed, across one shard's partitions.
#[derive(Clone, Debug)]
pub struct ReadAheadBudget {
    used: Rc<Cell<usize>>,
    limit: usize,
}

impl ReadAheadBudget {
    /// A budget of `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            used: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// Bytes currently held by unclaimed chunks.
    #[must_use]
    pub fn used(&self) -> usize {
        self.used.get()
    }

    fn charge(&self, bytes: usize) -> Option<Charge> {
        let used = self.used.get();
        if used + bytes > self.limit {
            return None;
        }
        self.used.set(used + bytes);
        Some(Charge {
            used: self.used.clone(),
            bytes,
        })
    }
}

/// A chunk's share of the budget, given back when the chunk is dropped.
#[derive(Debug)]
struct Charge {
    used: Rc<Cell<usize>>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.used.set(self.used.get() - self.bytes);
    }
}

/// Where a partition's last read from disk stopped: the batch boundary the
/// next sequential read starts at.
pub(crate) struct ReadPoint<S: Storage> {
    pub handle: SegmentHandle<S>,
    /// Base offset of the segment.
    pub base: Offset,
    /// Base offset of the batch at `position`.
    pub offset: Offset,
    pub position: u64,
}

impl<S: Storage> ReadPoint<S> {
    fn is_at(&self, handle: &SegmentHandle<S>, base: Offset, offset: Offset) -> bool {
        self.base == base && self.offset == offset && self.handle.same_file(handle)
    }
}

impl<S: Storage> Clone for ReadPoint<S> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            base: self.base,
            offset: self.offset,
            position: self.position,
        }
    }
}

/// Bytes read (or being read) from a [`ReadPoint`].
struct Chunk<S: Storage> {
    point: ReadPoint<S>,
    generation: u64,
    /// `None` while the read is in flight, and once taken.
    bytes: RefCell<Option<Result<Bytes>>>,
    /// Notified when the read completes.
    read: Event,
    _charge: Charge,
}

/// One partition's read-ahead: where its reader continues, and the chunk
/// read from there.
pub(crate) struct ReadAhead<S: Storage> {
    next: RefCell<Option<ReadPoint<S>>>,
    chunk: RefCell<Option<Rc<Chunk<S>>>>,
    generation: Cell<u64>,
}

impl<S: Storage> Default for ReadAhead<S> {
    fn default() -> Self {
        Self {
            next: RefCell::new(None),
            chunk: RefCell::new(None),
            generation: Cell::new(0),
        }
    }
}

impl<S: Storage> ReadAhead<S> {
    /// Records where a read from disk stopped.
    pub fn note_stop(&self, point: ReadPoint<S>) {
        *self.next.borrow_mut() = Some(point);
    }

    /// Forgets the reader's position and drops any chunk: the reader is no
    /// longer reading from disk, or the bytes may no longer be the log's.
    pub fn forget(&self) {
        self.next.borrow_mut().take();
        self.chunk.borrow_mut().take();
    }

    /// Whether a reader stopped at a point no chunk was read from yet.
    pub fn is_due(&self) -> bool {
        self.next.borrow().is_some()
    }

    /// Takes the point a chunk is due from.
    pub fn take_due(&self) -> Option<ReadPoint<S>> {
        self.next.borrow_mut().take()
    }

    /// Takes the chunk for a read of `offset` in segment `base` (file
    /// `handle`), waiting for its I/O if it is in flight: the position it
    /// starts at and its bytes. Without a chunk, a reader continuing where
    /// it stopped (no chunk was read yet, or the budget allowed none) still
    /// learns the exact position (empty bytes), which spares it the scan
    /// from the index entry. A chunk for another place is dropped: each
    /// chunk serves one read.
    pub async fn claim(
        &self,
        handle: &SegmentHandle<S>,
        base: Offset,
        offset: Offset,
    ) -> Option<(u64, Bytes)> {
        let chunk = self.chunk.borrow_mut().take();
        if let Some(chunk) = chunk.filter(|chunk| chunk.point.is_at(handle, base, offset)) {
            loop {
                let listener = chunk.read.listen();
                if let Some(read) = chunk.bytes.borrow_mut().take() {
                    if let Ok(bytes) = read {
                        return Some((chunk.point.position, bytes));
                    }
                    // A failed read ahead: the reader's own read reports
                    // the error if there still is one.
                    break;
                }
                if Rc::strong_count(&chunk) == 1 {
                    // The reading task is gone (shutdown).
                    break;
                }
                listener.await;
            }
        }
        let next = self.next.borrow();
        next.as_ref()
            .filter(|point| point.is_at(handle, base, offset))
            .map(|point| (point.position, Bytes::new()))
    }

    /// Reads `len` bytes at `point` into a new chunk, if `budget` allows;
    /// returns the chunk's generation, for [`ReadAhead::expire`].
    pub async fn read(
        &self,
        point: ReadPoint<S>,
        len: usize,
        budget: &ReadAheadBudget,
    ) -> Option<u64> {
        let charge = budget.charge(len)?;
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let chunk = Rc::new(Chunk {
            point,
            generation,
            bytes: RefCell::new(None),
            read: Event::new(),
            _charge: charge,
        });
        *self.chunk.borrow_mut() = Some(chunk.clone());
        let read = chunk.point.handle.read_raw(chunk.point.position, len).await;
        *chunk.bytes.borrow_mut() = Some(read);
        chunk.read.notify(usize::MAX);
        Some(generation)
    }

    /// Drops the chunk of `generation` if no read claimed it.
    pub fn expire(&self, generation: u64) {
        let mut chunk = self.chunk.borrow_mut();
        if chunk
            .as_ref()
            .is_some_and(|chunk| chunk.generation == generation)
        {
            chunk.take();
        }
    }
}
