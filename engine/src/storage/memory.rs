//! In-memory storage with injectable faults and crash simulation.
//!
//! Implements the same [`Storage`] contract as the `O_DIRECT` implementation,
//! but keeps every file as two byte vectors: what was *written* (visible to
//! reads) and what was *flushed* (what survives [`MemoryStorage::crash`]).
//! Tests use it to run the engine's recovery, fault and model tests with no
//! disk, deterministically from a seed.
//!
//! Fault model:
//! - the n-th write or fdatasync from now can fail with `EIO`, or a write can
//!   be short ([`Faults`]);
//! - a crash drops every write not covered by an fdatasync, except a random
//!   prefix of them, possibly torn at a 512-byte sector boundary, as a disk
//!   with a volatile write cache may persist some of them;
//! - directory operations (creating a file or directory, rename, remove)
//!   change what lookups see at once but survive a crash only once their
//!   directory is synced ([`Storage::sync_dir`]), as POSIX promises and no
//!   more: a crash brings back a removed file, drops a created one, undoes a
//!   rename; an fdatasync of a file makes its content durable, not its name.
//!   [`Storage::write_file_atomic`] syncs its directory, as the real one does.
//!
//! [`MemoryStorage::crash`] crashes in place; [`MemoryStorage::after_crash`]
//! and [`MemoryStorage::copy`] leave the storage a test's shard still runs on
//! untouched and return the file system a restart would find after a power
//! loss or a `kill -9` at this instant.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::{AlignedBuffer, Storage, StorageFile, BLOCK_BYTES};

/// Sector size at which a crash may tear a write.
const SECTOR_BYTES: usize = 512;

/// A plain heap buffer; alignment of memory addresses does not matter here,
/// but lengths and positions are still checked against [`BLOCK_BYTES`].
#[derive(Debug)]
pub struct MemoryBuffer(Vec<u8>);

impl AlignedBuffer for MemoryBuffer {
    fn as_slice(&self) -> &[u8] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// Faults to inject, counted in operations from when they are set.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fail the n-th `write_at` from now (0 = the next one) with `EIO`.
    pub write_error_in: Option<u64>,
    /// Fail the n-th `fdatasync` from now with `EIO`.
    pub sync_error_in: Option<u64>,
    /// Make the n-th `write_at` from now write only its first block.
    pub short_write_in: Option<u64>,
    /// Fail the n-th `rename` or `remove_file` from now with `EIO`.
    pub dir_error_in: Option<u64>,
    /// Every write stays in flight for one turn of the executor before it
    /// completes, as a real one does, so concurrent appends queue up behind
    /// it (and wait for room in the write queue) instead of each finding
    /// the writer idle.
    pub writes_in_flight: bool,
}

#[derive(Clone, Debug)]
enum UnflushedChange {
    Write { position: u64, data: Vec<u8> },
    Truncate { len: u64 },
}

#[derive(Clone, Debug, Default)]
struct MemoryFileState {
    /// What reads see.
    written: Vec<u8>,
    /// What survives a crash.
    flushed: Vec<u8>,
    /// Changes since the last fdatasync, in issue order.
    unflushed: Vec<UnflushedChange>,
}

/// A file system's names: files (by path, sharing their state with every
/// name and open handle of the same file) and directories.
#[derive(Clone, Debug, Default)]
struct Namespace {
    files: BTreeMap<PathBuf, Rc<RefCell<MemoryFileState>>>,
    dirs: BTreeSet<PathBuf>,
}

impl Namespace {
    /// Makes the entries of directory `dir` in `self` what they are in
    /// `current`.
    fn sync_entries_of(&mut self, dir: &Path, current: &Namespace) {
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        self.files.retain(|path, _| !in_dir(path));
        self.dirs.retain(|path| !in_dir(path));
        for (path, state) in current.files.iter().filter(|(path, _)| in_dir(path)) {
            self.files.insert(path.clone(), state.clone());
        }
        self.dirs
            .extend(current.dirs.iter().filter(|path| in_dir(path)).cloned());
    }

    /// Whether `path`'s parent directory is reachable: one that was never
    /// created through this storage (the data directory itself) always is.
    fn parent_reachable(&self, path: &Path, ever_created: &BTreeSet<PathBuf>) -> bool {
        path.ancestors()
            .skip(1)
            .all(|ancestor| self.dirs.contains(ancestor) || !ever_created.contains(ancestor))
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// What lookups see.
    visible: Namespace,
    /// What directories' synced entries say: what a crash comes back to.
    durable: Namespace,
    /// Every directory created through this storage.
    ever_created: BTreeSet<PathBuf>,
    faults: Faults,
    /// State for the crash-time choice of surviving unflushed writes.
    rng_state: u64,
}

/// A whole file system in memory. Cloning shares the same files.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    inner: Rc<RefCell<Inner>>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO on {what}"))
}

fn take_fault(slot: &mut Option<u64>) -> bool {
    match slot {
        Some(0) => {
            *slot = None;
            true
        }
        Some(n) => {
            *n -= 1;
            false
        }
        None => false,
    }
}

impl MemoryStorage {
    /// An empty file system whose crash behaviour is driven by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let storage = Self::default();
        storage.inner.borrow_mut().rng_state = seed | 1;
        storage
    }

    /// Replaces the pending faults.
    pub fn set_faults(&self, faults: Faults) {
        self.inner.borrow_mut().faults = faults;
    }

    /// Simulates a power loss: the names fall back to what synced
    /// directories say, and every file to its flushed content plus a random
    /// prefix of its unflushed writes, the last one possibly torn at a
    /// sector boundary. Open files must not be used afterwards.
    pub fn crash(&self) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let mut survivors: HashMap<*const RefCell<MemoryFileState>, Rc<RefCell<MemoryFileState>>> =
            HashMap::new();
        let mut files = BTreeMap::new();
        for (path, file) in &inner.durable.files {
            if !inner.durable.parent_reachable(path, &inner.ever_created) {
                continue;
            }
            let survivor = survivors
                .entry(Rc::as_ptr(file))
                .or_insert_with(|| {
                    let content = surviving_content(&file.borrow(), &mut inner.rng_state);
                    Rc::new(RefCell::new(MemoryFileState {
                        written: content.clone(),
                        flushed: content,
                        unflushed: Vec::new(),
                    }))
                })
                .clone();
            files.insert(path.clone(), survivor);
        }
        let dirs = inner
            .durable
            .dirs
            .iter()
            .filter(|dir| inner.durable.parent_reachable(dir, &inner.ever_created))
            .cloned()
            .collect();
        inner.visible = Namespace { files, dirs };
        inner.durable = inner.visible.clone();
    }

    /// An independent copy of this file system as it is now, unflushed
    /// writes and unsynced names included: what a restart finds after a
    /// `kill -9`. Faults are not copied.
    #[must_use]
    pub fn copy(&self) -> MemoryStorage {
        let inner = self.inner.borrow();
        let mut copies: HashMap<*const RefCell<MemoryFileState>, Rc<RefCell<MemoryFileState>>> =
            HashMap::new();
        let mut copy_namespace = |namespace: &Namespace| Namespace {
            files: namespace
                .files
                .iter()
                .map(|(path, file)| {
                    let copy = copies
                        .entry(Rc::as_ptr(file))
                        .or_insert_with(|| Rc::new(RefCell::new(file.borrow().clone())))
                        .clone();
                    (path.clone(), copy)
                })
                .collect(),
            dirs: namespace.dirs.clone(),
        };
        let visible = copy_namespace(&inner.visible);
        let durable = copy_namespace(&inner.durable);
        MemoryStorage {
            inner: Rc::new(RefCell::new(Inner {
                visible,
                durable,
                ever_created: inner.ever_created.clone(),
                faults: Faults::default(),
                rng_state: inner.rng_state,
            })),
        }
    }

    /// The file system a restart finds after a power loss at this instant
    /// ([`MemoryStorage::crash`] of a [`MemoryStorage::copy`]); this one is
    /// left as it is.
    #[must_use]
    pub fn after_crash(&self) -> MemoryStorage {
        let copy = self.copy();
        copy.crash();
        copy
    }

    /// Overwrites bytes of a file directly, as bit rot would.
    ///
    /// # Panics
    /// If the file does not exist or the range is outside it.
    pub fn corrupt(&self, path: &Path, position: usize, bytes: &[u8]) {
        let inner = self.inner.borrow();
        let mut state = inner.visible.files[path].borrow_mut();
        state.written[position..position + bytes.len()].copy_from_slice(bytes);
        state.flushed[position..position + bytes.len()].copy_from_slice(bytes);
    }

    /// Every file path, sorted.
    #[must_use]
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.inner.borrow().visible.files.keys().cloned().collect()
    }
}

/// xorshift64*: deterministic per seed, good enough to pick crash points.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// What of `file` survives a power loss: its flushed content plus a random
/// prefix of its unflushed changes, the last write possibly torn.
fn surviving_content(file: &MemoryFileState, rng_state: &mut u64) -> Vec<u8> {
    let mut survivor = file.flushed.clone();
    let changes = &file.unflushed;
    let kept = (next_random(rng_state) % (changes.len() as u64 + 1)) as usize;
    for (index, change) in changes.iter().enumerate().take(kept) {
        match change {
            UnflushedChange::Write { position, data } => {
                let torn_length = if index + 1 == kept {
                    let sectors = data.len().div_ceil(SECTOR_BYTES) as u64;
                    let kept_sectors = (next_random(rng_state) % (sectors + 1)) as usize;
                    (kept_sectors * SECTOR_BYTES).min(data.len())
                } else {
                    data.len()
                };
                write_into(&mut survivor, *position, &data[..torn_length]);
            }
            UnflushedChange::Truncate { len } => survivor.resize(*len as usize, 0),
        }
    }
    survivor
}

fn write_into(target: &mut Vec<u8>, position: u64, data: &[u8]) {
    let position = position as usize;
    if target.len() < position + data.len() {
        target.resize(position + data.len(), 0);
    }
    target[position..position + data.len()].copy_from_slice(data);
}

/// A file of a [`MemoryStorage`].
#[derive(Debug)]
pub struct MemoryFile {
    state: Rc<RefCell<MemoryFileState>>,
    storage: MemoryStorage,
}

impl StorageFile for MemoryFile {
    type Buffer = MemoryBuffer;

    async fn write_at(&self, buffer: Rc<MemoryBuffer>, position: u64) -> io::Result<usize> {
        assert_eq!(position % BLOCK_BYTES as u64, 0, "unaligned write position");
        assert_eq!(buffer.0.len() % BLOCK_BYTES, 0, "unaligned write length");
        let (fail, short, in_flight) = {
            let mut inner = self.storage.inner.borrow_mut();
            (
                take_fault(&mut inner.faults.write_error_in),
                take_fault(&mut inner.faults.short_write_in),
                inner.faults.writes_in_flight,
            )
        };
        if in_flight {
            futures_lite::future::yield_now().await;
        }
        if fail {
            return Err(eio("write"));
        }
        let length = if short {
            BLOCK_BYTES.min(buffer.0.len())
        } else {
            buffer.0.len()
        };
        let mut state = self.state.borrow_mut();
        let data = buffer.0[..length].to_vec();
        write_into(&mut state.written, position, &data);
        state
            .unflushed
            .push(UnflushedChange::Write { position, data });
        Ok(length)
    }

    async fn read_at(&self, position: u64, len: usize) -> io::Result<Bytes> {
        let state = self.state.borrow();
        let start = (position as usize).min(state.written.len());
        let end = (start + len).min(state.written.len());
        Ok(Bytes::copy_from_slice(&state.written[start..end]))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        if take_fault(&mut self.storage.inner.borrow_mut().faults.sync_error_in) {
            return Err(eio("fdatasync"));
        }
        let mut state = self.state.borrow_mut();
        let MemoryFileState {
            written, flushed, ..
        } = &mut *state;
        flushed.clone_from(written);
        state.unflushed.clear();
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.written.resize(len as usize, 0);
        state.unflushed.push(UnflushedChange::Truncate { len });
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.state.borrow().written.len() as u64)
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl Storage for MemoryStorage {
    type File = MemoryFile;

    fn alloc_buffer(&self, len: usize) -> MemoryBuffer {
        assert_eq!(len % BLOCK_BYTES, 0, "unaligned buffer length");
        // Not zeroed, like a reused DMA buffer: code that relied on zeroed
        // buffers would write this pattern to "disk" and fail the tests.
        MemoryBuffer(vec![0xA5; len])
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<MemoryFile> {
        let mut inner = self.inner.borrow_mut();
        let state = match inner.visible.files.get(path) {
            Some(state) => state.clone(),
            None if create => {
                let state = Rc::new(RefCell::new(MemoryFileState::default()));
                inner
                    .visible
                    .files
                    .insert(path.to_path_buf(), state.clone());
                state
            }
            None => return Err(not_found(path)),
        };
        Ok(MemoryFile {
            state,
            storage: self.clone(),
        })
    }

    fn open_for_send(&self, _path: &Path) -> io::Result<Option<std::fs::File>> {
        Ok(None)
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner.visible.dirs.insert(path.to_path_buf());
        inner.ever_created.insert(path.to_path_buf());
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let inner = self.inner.borrow();
        let mut names: Vec<String> = inner
            .visible
            .files
            .keys()
            .chain(inner.visible.dirs.iter())
            .filter(|entry| entry.parent() == Some(path))
            .filter_map(|entry| entry.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn list_subdirectories(&self, path: &Path) -> io::Result<Vec<String>> {
        let inner = self.inner.borrow();
        // Sorted and unique: `dirs` is a set.
        Ok(inner
            .visible
            .dirs
            .iter()
            .filter(|entry| entry.parent() == Some(path))
            .filter_map(|entry| entry.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        if take_fault(&mut inner.faults.dir_error_in) {
            return Err(eio("remove"));
        }
        inner.visible.files.remove(path);
        Ok(())
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner
            .visible
            .files
            .retain(|file, _| !file.starts_with(path));
        inner.visible.dirs.retain(|dir| !dir.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        if take_fault(&mut inner.faults.dir_error_in) {
            return Err(eio("rename"));
        }
        let state = inner
            .visible
            .files
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        inner.visible.files.insert(to.to_path_buf(), state);
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let Inner {
            visible, durable, ..
        } = &mut *inner;
        durable.sync_entries_of(path, visible);
        Ok(())
    }

    async fn write_file_atomic(&self, path: &Path, content: Vec<u8>) -> io::Result<()> {
        if take_fault(&mut self.inner.borrow_mut().faults.sync_error_in) {
            return Err(eio("fsync of checkpoint"));
        }
        let state = MemoryFileState {
            written: content.clone(),
            flushed: content,
            unflushed: Vec::new(),
        };
        // Written, synced, renamed into place and the directory synced.
        let state = Rc::new(RefCell::new(state));
        let mut inner = self.inner.borrow_mut();
        inner
            .visible
            .files
            .insert(path.to_path_buf(), state.clone());
        inner.durable.files.insert(path.to_path_buf(), state);
        Ok(())
    }

    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let inner = self.inner.borrow();
        Ok(inner
            .visible
            .files
            .get(path)
            .map(|state| state.borrow().written.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn block(byte: u8) -> Rc<MemoryBuffer> {
        Rc::new(MemoryBuffer(vec![byte; BLOCK_BYTES]))
    }

    #[test]
    fn crash_keeps_flushed_writes_and_drops_a_suffix_of_the_rest() {
        for seed in 1..50 {
            let storage = MemoryStorage::new(seed);
            let path = Path::new("/d/f");
            block_on(async {
                let file = storage.open(path, true).await.unwrap();
                file.write_at(block(1), 0).await.unwrap();
                file.fdatasync().await.unwrap();
                file.write_at(block(2), BLOCK_BYTES as u64).await.unwrap();
                file.write_at(block(3), 2 * BLOCK_BYTES as u64)
                    .await
                    .unwrap();
                storage.sync_dir(Path::new("/d")).await.unwrap();
            });
            storage.crash();
            let content = block_on(storage.read_file(path)).unwrap().unwrap();
            assert!(
                content[..BLOCK_BYTES].iter().all(|&b| b == 1),
                "seed {seed}"
            );
            // Whatever survived of the unflushed writes is a prefix in issue order.
            let second = &content[BLOCK_BYTES.min(content.len())..];
            if content.len() > 2 * BLOCK_BYTES {
                assert!(second[..BLOCK_BYTES].iter().all(|&b| b == 2), "seed {seed}");
            }
        }
    }

    #[test]
    fn a_crash_undoes_the_directory_operations_no_sync_made_durable() {
        let storage = MemoryStorage::new(3);
        let dir = Path::new("/data/topic-0");
        block_on(async {
            storage.create_dir_all(dir).await.unwrap();
            storage.sync_dir(Path::new("/data")).await.unwrap();
            for name in ["kept", "removed", "renamed"] {
                let file = storage.open(&dir.join(name), true).await.unwrap();
                file.write_at(block(7), 0).await.unwrap();
                file.fdatasync().await.unwrap();
            }
            storage.sync_dir(dir).await.unwrap();
            // None of these is synced: a crash undoes each.
            storage.open(&dir.join("created"), true).await.unwrap();
            storage.remove_file(&dir.join("removed")).await.unwrap();
            storage
                .rename(&dir.join("renamed"), &dir.join("new-name"))
                .unwrap();
        });
        let names = |storage: &MemoryStorage| block_on(storage.list_dir(dir)).unwrap();
        assert_eq!(names(&storage), ["created", "kept", "new-name"]);
        let crashed = storage.after_crash();
        assert_eq!(names(&crashed), ["kept", "removed", "renamed"]);
        // after_crash left the running file system alone.
        assert_eq!(names(&storage), ["created", "kept", "new-name"]);
        let content = block_on(crashed.read_file(&dir.join("renamed"))).unwrap();
        assert_eq!(content, Some(vec![7; BLOCK_BYTES]));

        block_on(storage.sync_dir(dir)).unwrap();
        assert_eq!(
            names(&storage.after_crash()),
            ["created", "kept", "new-name"]
        );
    }

    #[test]
    fn a_directory_whose_creation_was_not_synced_vanishes_with_its_files() {
        let storage = MemoryStorage::new(5);
        let dir = Path::new("/data/topic-1");
        block_on(async {
            storage.create_dir_all(dir).await.unwrap();
            let file = storage.open(&dir.join("f"), true).await.unwrap();
            file.write_at(block(1), 0).await.unwrap();
            file.fdatasync().await.unwrap();
            storage.sync_dir(dir).await.unwrap();
        });
        let crashed = storage.after_crash();
        assert!(block_on(crashed.list_subdirectories(Path::new("/data")))
            .unwrap()
            .is_empty());
        assert!(crashed.file_paths().is_empty());
        // A kill -9 loses nothing: the kernel still has every name.
        assert_eq!(storage.copy().file_paths(), [dir.join("f")]);
    }

    #[test]
    fn injected_faults_fire_once_at_their_count() {
        let storage = MemoryStorage::new(7);
        storage.set_faults(Faults {
            write_error_in: Some(1),
            sync_error_in: Some(0),
            short_write_in: None,
            dir_error_in: None,
            writes_in_flight: false,
        });
        block_on(async {
            let file = storage.open(Path::new("/f"), true).await.unwrap();
            assert!(file.fdatasync().await.is_err());
            assert!(file.fdatasync().await.is_ok());
            assert_eq!(file.write_at(block(1), 0).await.unwrap(), BLOCK_BYTES);
            assert!(file.write_at(block(1), 0).await.is_err());
            assert!(file.write_at(block(1), 0).await.is_ok());
        });
    }
}
