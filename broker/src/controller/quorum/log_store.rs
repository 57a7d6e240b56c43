//! The Raft log of the controller quorum on disk: openraft's
//! [`RaftLogStorage`] (storage API v2) over files in one directory, the
//! metadata log's `__cluster_metadata-0`.
//!
//! # Files
//! - `<first index>.raftlog` (20 digits): a *segment*, a sequence of
//!   frames, one per Raft entry, in index order. The frame is the metadata
//!   log's checkpoint framing (magic `FJQE`, version, length, CRC-32C, see
//!   [`crate::controller::log`]) around the entry's postcard encoding (an
//!   entry's log id and membership are openraft's serde types; a metadata
//!   change inside it is an rkyv archive of its records).
//! - `raft.vote`: the vote (term, candidate, committed), one frame.
//! - `raft.purged`: the id of the last entry purged (covered by a snapshot
//!   and dropped), one frame.
//! - `raft.committed`: the last committed log id known, one frame; a hint
//!   that lets a restart apply what it already knows committed without
//!   waiting for a leader.
//!
//! The names differ from the local metadata log's (`.log`, `.snapshot`) so
//! both can share the directory while one replaces the other.
//!
//! # Durability contract
//! - `save_vote` returns once the vote file is replaced (written to a
//!   temporary, `fsync`ed, renamed, directory synced): a voter never
//!   forgets a vote it granted.
//! - `append` writes the entries' frames to the last segment and
//!   `fdatasync`s it before it calls openraft's flush callback, so an entry
//!   counted towards a commit survives power loss.
//! - `truncate` (a conflicting suffix a new leader overrides) deletes the
//!   later segments newest first and cuts the one holding the first
//!   removed entry, synced, so a crash leaves a prefix of the log, never a
//!   hole.
//! - `purge` (entries a snapshot covers) first replaces `raft.purged`,
//!   durably, then starts a new segment and deletes the segments holding
//!   only purged entries; entries at or below the purged id left by a
//!   crash are skipped on open.
//! - A failed write or sync poisons the store: what reached the disk is
//!   unknown, so it refuses every further write and openraft stops the
//!   node on the storage error; a restart recovers from the files.
//! - `raft.committed` is replaced without a sync: a stale or damaged one
//!   only means a restart waits for the leader to learn what is committed.
//!   It is used only if the log still holds that exact entry.
//!
//! Writes and syncs run inline on the controller thread: the metadata log
//! sees a change at a time, and a slow disk then delays this member's own
//! timers and answers, never a data shard.
//!
//! # Recovery
//! Only the last append can be unsynced, so an invalid frame in the last
//! segment is a torn tail: it and everything after it are cut (truncated
//! and synced) before appending resumes, and the leader sends the lost
//! entries again. An invalid frame anywhere else, entries out of order, a
//! damaged vote or purged id is corruption and fails the open.
//!
//! # Memory
//! The entries not yet purged are kept in memory (openraft's replication
//! reads them from there), so what the store holds is bounded by the
//! snapshot policy: a snapshot every `snapshot_interval_entries` entries,
//! then a purge keeping `max_in_snapshot_log_to_keep`. Purged entries are
//! never read back: a follower that needs them gets the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fjord_engine::checkpoint::encode_frame;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::QuorumError;
use super::types::{MetadataTypes, NodeId};
use crate::controller::log::{
    create_appendable, cut, io_error, numbered_path, parse_numbered, read_frame, sync_dir,
    write_synced, LogError, BATCH_BYTES_MAX,
};

/// Suffix of a segment file.
pub const SEGMENT_SUFFIX: &str = ".raftlog";
/// The vote file.
pub const VOTE_FILE: &str = "raft.vote";
/// The purged log id file.
pub const PURGED_FILE: &str = "raft.purged";
/// The committed log id file.
pub const COMMITTED_FILE: &str = "raft.committed";
/// Suffix of a file being replaced.
pub(super) const TEMPORARY_SUFFIX: &str = ".tmp";
const ENTRY_MAGIC: [u8; 4] = *b"FJQE";
const VOTE_MAGIC: [u8; 4] = *b"FJQV";
const PURGED_MAGIC: [u8; 4] = *b"FJQP";
const COMMITTED_MAGIC: [u8; 4] = *b"FJQC";
const FORMAT_VERSION: u16 = 1;

type StoreResult<T> = Result<T, StorageError<NodeId>>;

/// One entry kept in memory, with where its frame is.
struct Stored {
    entry: Entry<MetadataTypes>,
    /// The first index of the segment holding it.
    segment: u64,
    /// Where its frame starts in that segment.
    position: u64,
}

/// The state the store and its readers share.
struct Inner {
    dir: PathBuf,
    /// Entries after the purged one, by index.
    entries: BTreeMap<u64, Stored>,
    /// First indexes of the segments on disk.
    segments: BTreeSet<u64>,
    /// The segment appends go to (the last one), and its length.
    active: File,
    active_base: u64,
    active_bytes: u64,
    vote: Option<Vote<NodeId>>,
    purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    poisoned: bool,
}

/// The quorum's [`RaftLogStorage`]; see the module documentation.
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

/// A reader of the entries in memory, for openraft's replication tasks.
pub struct LogReader {
    inner: Arc<Mutex<Inner>>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Every update of `Inner` is completed before its guard drops or the
    // store is poisoned; a panic elsewhere leaves it consistent.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir` and recovers it: see the
    /// module documentation.
    ///
    /// # Errors
    /// [`QuorumError::Log`] if a file cannot be listed, read, cut or
    /// created; a corruption variant for damage other than a torn tail.
    pub fn open(dir: &Path) -> Result<Self, QuorumError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut bases = BTreeSet::new();
        for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let entry = entry.map_err(io_error("listing", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with("raft.") && name.ends_with(TEMPORARY_SUFFIX) {
                fs::remove_file(entry.path()).map_err(io_error("removing", &entry.path()))?;
            } else if let Some(base) = parse_base(name) {
                bases.insert(base);
            }
        }
        let vote = read_small_file(&dir.join(VOTE_FILE), VOTE_MAGIC)?;
        let purged: Option<LogId<NodeId>> = read_small_file(&dir.join(PURGED_FILE), PURGED_MAGIC)?;
        let committed_path = dir.join(COMMITTED_FILE);
        let committed = read_small_file(&committed_path, COMMITTED_MAGIC).unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring the unsynced committed log id");
            None
        });
        let next_index = purged.map_or(0, |purged| purged.index + 1);
        let mut recovery = Recovery {
            entries: BTreeMap::new(),
            next_index,
        };
        let ordered: Vec<u64> = bases.iter().copied().collect();
        // A segment whose successor starts at or below the first unpurged
        // index holds only purged entries: left by a crash during a purge.
        let first_needed = ordered
            .iter()
            .rposition(|&base| base <= next_index)
            .unwrap_or(0);
        for &base in &ordered[..first_needed] {
            let path = segment_path(dir, base);
            fs::remove_file(&path).map_err(io_error("removing", &path))?;
            bases.remove(&base);
        }
        let mut segment_end = None;
        let mut active_bytes = 0;
        let needed = &ordered[first_needed..];
        for (position, &base) in needed.iter().enumerate() {
            let path = segment_path(dir, base);
            if let Some(expected) = segment_end {
                if base != expected {
                    return Err(QuorumError::OutOfOrder {
                        path,
                        expected,
                        found: base,
                    });
                }
            }
            let is_last = position + 1 == needed.len();
            let (end, bytes) = recovery.scan(&path, base, is_last)?;
            segment_end = Some(end);
            active_bytes = bytes;
        }
        let next_index = recovery.next_index;
        let (active, active_base, active_bytes) = match needed.last() {
            Some(&base) if segment_end == Some(next_index) => {
                let path = segment_path(dir, base);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_error("opening", &path))?;
                (file, base, active_bytes)
            }
            _ => {
                bases.insert(next_index);
                (create_segment(dir, next_index)?, next_index, 0)
            }
        };
        let committed = committed.filter(|committed: &LogId<NodeId>| {
            recovery
                .entries
                .get(&committed.index)
                .is_some_and(|stored| stored.entry.log_id == *committed)
        });
        let inner = Inner {
            dir: dir.to_path_buf(),
            entries: recovery.entries,
            segments: bases,
            active,
            active_base,
            active_bytes,
            vote,
            purged,
            committed,
            poisoned: false,
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

/// The entries recovered so far.
struct Recovery {
    entries: BTreeMap<u64, Stored>,
    /// The index the next unpurged entry must have.
    next_index: u64,
}

impl Recovery {
    /// Reads the segment at `path` starting at index `base`, cutting a torn
    /// tail if it is the last one; returns the index after its last entry
    /// and its length after any cut.
    fn scan(&mut self, path: &Path, base: u64, is_last: bool) -> Result<(u64, u64), QuorumError> {
        let bytes = fs::read(path).map_err(io_error("reading", path))?;
        let mut position = 0;
        let mut index = base;
        while position < bytes.len() {
            let (payload, frame_bytes) =
                match read_frame(&bytes[position..], ENTRY_MAGIC, FORMAT_VERSION) {
                    Ok(frame) => frame,
                    Err(reason) if is_last => {
                        tracing::warn!(
                            path = %path.display(),
                            position,
                            cut_bytes = bytes.len() - position,
                            %reason,
                            "cutting the torn tail of the controller quorum log"
                        );
                        cut(path, position as u64)?;
                        return Ok((index, position as u64));
                    }
                    Err(reason) => {
                        return Err(QuorumError::CorruptFrame {
                            path: path.to_path_buf(),
                            position: position as u64,
                            reason,
                        })
                    }
                };
            let entry: Entry<MetadataTypes> =
                postcard::from_bytes(payload).map_err(|source| QuorumError::Undecodable {
                    path: path.to_path_buf(),
                    position: position as u64,
                    source,
                })?;
            let out_of_order = |expected| QuorumError::OutOfOrder {
                path: path.to_path_buf(),
                expected,
                found: entry.log_id.index,
            };
            if entry.log_id.index != index {
                return Err(out_of_order(index));
            }
            if index >= self.next_index {
                if index != self.next_index {
                    return Err(out_of_order(self.next_index));
                }
                self.next_index = index + 1;
                self.entries.insert(
                    index,
                    Stored {
                        entry,
                        segment: base,
                        position: position as u64,
                    },
                );
            }
            index += 1;
            position += frame_bytes;
        }
        Ok((index, bytes.len() as u64))
    }
}

impl Inner {
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .last_key_value()
            .map(|(_, stored)| stored.entry.log_id)
            .or(self.purged)
    }

    fn next_index(&self) -> u64 {
        self.last_log_id().map_or(0, |last| last.index + 1)
    }

    fn check_not_poisoned(&self) -> Result<(), QuorumError> {
        if self.poisoned {
            Err(QuorumError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Writes and syncs `entries`' frames to the active segment and keeps
    /// them in memory; poisons the store if the write or sync fails.
    fn append(&mut self, entries: Vec<Entry<MetadataTypes>>) -> Result<(), QuorumError> {
        self.check_not_poisoned()?;
        let mut buffer = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for (expected, entry) in (self.next_index()..).zip(&entries) {
            if entry.log_id.index != expected {
                return Err(QuorumError::OutOfOrder {
                    path: segment_path(&self.dir, self.active_base),
                    expected,
                    found: entry.log_id.index,
                });
            }
            let payload = encode_postcard(entry);
            let frame = encode_frame(ENTRY_MAGIC, FORMAT_VERSION, &payload);
            if frame.len() > BATCH_BYTES_MAX {
                return Err(LogError::BatchTooLarge { bytes: frame.len() }.into());
            }
            positions.push(self.active_bytes + buffer.len() as u64);
            buffer.extend_from_slice(&frame);
        }
        let written = self
            .active
            .write_all(&buffer)
            .and_then(|()| self.active.sync_data());
        if let Err(source) = written {
            self.poisoned = true;
            return Err(LogError::Io {
                context: "appending to",
                path: segment_path(&self.dir, self.active_base),
                source,
            }
            .into());
        }
        self.active_bytes += buffer.len() as u64;
        for (entry, position) in entries.into_iter().zip(positions) {
            let stored = Stored {
                entry,
                segment: self.active_base,
                position,
            };
            self.entries.insert(stored.entry.log_id.index, stored);
        }
        Ok(())
    }

    /// Removes the entries from `index` on, durably.
    fn truncate(&mut self, index: u64) -> Result<(), QuorumError> {
        self.check_not_poisoned()?;
        let Some(first) = self.entries.get(&index) else {
            return Ok(());
        };
        let (segment, position) = (first.segment, first.position);
        let later: Vec<u64> = self.segments.range(segment + 1..).copied().collect();
        self.poisoned = true;
        for &base in later.iter().rev() {
            let path = segment_path(&self.dir, base);
            fs::remove_file(&path).map_err(io_error("removing", &path))?;
            self.segments.remove(&base);
        }
        sync_dir(&self.dir)?;
        let path = segment_path(&self.dir, segment);
        cut(&path, position)?;
        self.active = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        self.active_base = segment;
        self.active_bytes = position;
        self.entries.split_off(&index);
        self.poisoned = false;
        Ok(())
    }

    /// Drops the entries up to `upto`, durably: see the module
    /// documentation.
    fn purge(&mut self, upto: LogId<NodeId>) -> Result<(), QuorumError> {
        self.check_not_poisoned()?;
        if self.purged.is_some_and(|purged| purged.index >= upto.index) {
            return Ok(());
        }
        replace_file(&self.dir, PURGED_FILE, PURGED_MAGIC, &upto, true)?;
        self.purged = Some(upto);
        self.entries = self.entries.split_off(&(upto.index + 1));
        let next_index = self.next_index();
        self.poisoned = true;
        if self.active_bytes > 0 || self.active_base != next_index {
            self.active = create_segment(&self.dir, next_index)?;
            self.active_base = next_index;
            self.active_bytes = 0;
            self.segments.insert(next_index);
        }
        let bases: Vec<u64> = self.segments.iter().copied().collect();
        for pair in bases.windows(2) {
            let (base, successor) = (pair[0], pair[1]);
            if successor <= upto.index + 1 {
                let path = segment_path(&self.dir, base);
                fs::remove_file(&path).map_err(io_error("removing", &path))?;
                self.segments.remove(&base);
            }
        }
        sync_dir(&self.dir)?;
        self.poisoned = false;
        Ok(())
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Vec<Entry<MetadataTypes>> {
        self.entries
            .range(range)
            .map(|(_, stored)| stored.entry.clone())
            .collect()
    }
}

fn write_failure(error: &QuorumError) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(error)).into()
}

impl RaftLogReader<MetadataTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<MetadataTypes>>> {
        Ok(lock(&self.inner).entries(range))
    }
}

impl RaftLogReader<MetadataTypes> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<MetadataTypes>>> {
        Ok(lock(&self.inner).entries(range))
    }
}

impl RaftLogStorage<MetadataTypes> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StoreResult<LogState<MetadataTypes>> {
        let inner = lock(&self.inner);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            inner: Arc::clone(&self.inner),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let mut inner = lock(&self.inner);
        replace_file(&inner.dir, VOTE_FILE, VOTE_MAGIC, vote, true)
            .map_err(|error| StorageIOError::write_vote(AnyError::new(&error)))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        Ok(lock(&self.inner).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        let mut inner = lock(&self.inner);
        if let Some(committed) = committed {
            replace_file(
                &inner.dir,
                COMMITTED_FILE,
                COMMITTED_MAGIC,
                &committed,
                false,
            )
            .map_err(|error| write_failure(&error))?;
        }
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(lock(&self.inner).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetadataTypes>,
    ) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<MetadataTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        lock(&self.inner)
            .append(entries)
            .map_err(|error| write_failure(&error))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        lock(&self.inner)
            .truncate(log_id.index)
            .map_err(|error| write_failure(&error))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        lock(&self.inner)
            .purge(log_id)
            .map_err(|error| write_failure(&error))
    }
}

/// The postcard encoding of one of openraft's serde types.
///
/// # Panics
/// Never in practice: postcard fails only for types serde cannot describe
/// without a length (none of openraft's) or on allocation, which aborts.
pub(super) fn encode_postcard<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("openraft's types encode with postcard")
}

/// Replaces `dir/name` with one frame around `value`: through a temporary
/// file and a rename, and, if `durable`, synced before and after the
/// rename.
fn replace_file<T: Serialize>(
    dir: &Path,
    name: &str,
    magic: [u8; 4],
    value: &T,
    durable: bool,
) -> Result<(), QuorumError> {
    let frame = encode_frame(magic, FORMAT_VERSION, &encode_postcard(value));
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}{TEMPORARY_SUFFIX}"));
    if durable {
        write_synced(&temporary, &frame)?;
    } else {
        fs::write(&temporary, &frame).map_err(io_error("writing", &temporary))?;
    }
    fs::rename(&temporary, &path).map_err(io_error("renaming", &temporary))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The value of a file [`replace_file`] wrote, or `None` if there is none.
fn read_small_file<T: DeserializeOwned>(
    path: &Path,
    magic: [u8; 4],
) -> Result<Option<T>, QuorumError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error("reading", path)(source).into()),
    };
    let corrupt = |reason| QuorumError::CorruptFrame {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    let (payload, frame_bytes) = read_frame(&bytes, magic, FORMAT_VERSION).map_err(corrupt)?;
    if frame_bytes != bytes.len() {
        return Err(corrupt(fjord_engine::error::Corruption::LengthMismatch {
            stated: payload.len() as u32,
            present: bytes.len() - (frame_bytes - payload.len()),
        }));
    }
    postcard::from_bytes(payload)
        .map(Some)
        .map_err(|source| QuorumError::Undecodable {
            path: path.to_path_buf(),
            position: 0,
            source,
        })
}

/// The first index in a segment's name `<20 digits>.raftlog`.
fn parse_base(name: &str) -> Option<u64> {
    parse_numbered(name, SEGMENT_SUFFIX)
}

/// The path of the segment starting at index `base`.
#[must_use]
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    numbered_path(dir, base, SEGMENT_SUFFIX)
}

/// Creates the empty segment starting at `base`, durably.
fn create_segment(dir: &Path, base: u64) -> Result<File, QuorumError> {
    Ok(create_appendable(dir, &segment_path(dir, base))?)
}

#[cfg(test)]
mod tests;
