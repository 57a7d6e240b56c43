//! The narrow disk interface the engine writes through.
//!
//! Everything the log does to a disk goes through [`Storage`] and
//! [`StorageFile`]: the real implementation ([`dma::DmaStorage`], glommio
//! `DmaFile`s opened with `O_DIRECT`) and an in-memory one with injectable
//! faults and crash simulation ([`memory::MemoryStorage`]) implement the same
//! traits, so recovery and fault tests run without a disk and the runtime stays
//! swappable. No glommio type appears outside `dma.rs`.
//!
//! # Durability contract
//! - [`StorageFile::write_at`] returning means the bytes were *written*: the
//!   device accepted them (DMA completed). They may still be lost on power
//!   failure or kernel crash.
//! - [`StorageFile::fdatasync`] returning means everything written to that
//!   file before the call is *flushed*: it survives a crash.
//! - [`Storage::write_file_atomic`] replaces a whole small file durably: after
//!   it returns, a crash leaves either the old or the new content, never a mix.
//! - Creating, renaming and removing files is durable once
//!   [`Storage::sync_dir`] on the parent returns.
//!
//! # The shard's core never blocks
//! Every call that can wait for the disk is `async`: the real storage runs
//! the ones io_uring does not cover (directory listings and removals, small
//! files, fsyncs of directories) on the shard's blocking thread pool, so a
//! shard keeps serving its other partitions while one waits. Only
//! [`Storage::open_for_send`] (one `open(2)` of a segment file the log
//! already has open) and [`Storage::rename`] (see there) run in place.

pub mod dma;
pub mod memory;

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

/// Alignment of every `O_DIRECT` write position and length. 4 KiB is the
/// logical block size of NVMe drives formatted 4Kn and a multiple of 512, so it
/// is safe on every device.
pub const BLOCK_BYTES: usize = 4096;

/// Rounds `n` up to a multiple of [`BLOCK_BYTES`].
#[must_use]
pub const fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Rounds `n` down to a multiple of [`BLOCK_BYTES`].
#[must_use]
pub const fn align_down(n: u64) -> u64 {
    n / BLOCK_BYTES as u64 * BLOCK_BYTES as u64
}

/// A block-aligned buffer that a [`StorageFile`] can write without copying.
pub trait AlignedBuffer {
    /// The buffer's bytes.
    fn as_slice(&self) -> &[u8];
    /// The buffer's bytes, writable.
    fn as_mut_slice(&mut self) -> &mut [u8];
}

/// One open file.
#[allow(
    async_fn_in_trait,
    reason = "files live on one shard's executor; their futures are never sent"
)]
pub trait StorageFile: 'static {
    /// The aligned buffer type this file writes from.
    type Buffer: AlignedBuffer;

    /// Writes `buffer` at `position`. Both must be multiples of
    /// [`BLOCK_BYTES`]. Returns the number of bytes written, which may be
    /// short; the caller keeps its reference to continue from there.
    async fn write_at(&self, buffer: Rc<Self::Buffer>, position: u64) -> io::Result<usize>;

    /// Reads up to `len` bytes at `position` (no alignment needed). Returns
    /// fewer bytes only at the end of the file.
    async fn read_at(&self, position: u64, len: usize) -> io::Result<Bytes>;

    /// Makes every completed write to this file durable.
    async fn fdatasync(&self) -> io::Result<()>;

    /// Sets the file's size (used to cut a torn tail and to drop the zero
    /// padding of the last block on close).
    async fn truncate(&self, len: u64) -> io::Result<()>;

    /// The file's size as the file system reports it. With `O_DIRECT` appends
    /// this is block-aligned and can exceed the log's logical end.
    async fn size(&self) -> io::Result<u64>;

    /// Closes the file.
    async fn close(self) -> io::Result<()>;
}

/// A file system: where segment and checkpoint files live.
#[allow(
    async_fn_in_trait,
    reason = "storage lives on one shard's executor; its futures are never sent"
)]
pub trait Storage: Clone + 'static {
    /// The file type this storage opens.
    type File: StorageFile;

    /// Allocates an aligned buffer of `len` bytes (a multiple of
    /// [`BLOCK_BYTES`]). Its content is unspecified: the caller writes every
    /// byte, so the hot path pays for no zeroing it then overwrites.
    fn alloc_buffer(&self, len: usize) -> <Self::File as StorageFile>::Buffer;

    /// Opens `path` for direct reads and writes, creating it if `create`.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;

    /// Opens `path` for zero-copy sends (sendfile/splice), if this storage has
    /// real file descriptors; `None` for in-memory storage.
    fn open_for_send(&self, path: &Path) -> io::Result<Option<std::fs::File>>;

    /// Creates `path` and its parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// The names of the entries of directory `path`, sorted.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// The names of the directories in directory `path`, sorted.
    async fn list_subdirectories(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Removes file `path`; a missing file is not an error.
    async fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes directory `path` and everything in it.
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to`. It runs in place, not on the
    /// blocking pool: the log cleaner renames its output over the segments
    /// it replaces and swaps them in memory in one step, so no task ever
    /// sees a segment whose file name already belongs to its successor.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes creations, renames and removals in directory `path` durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Replaces the content of the small file `path` durably and atomically.
    async fn write_file_atomic(&self, path: &Path, content: Vec<u8>) -> io::Result<()>;

    /// The whole content of the small file `path`, or `None` if it does not
    /// exist.
    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
}

/// The temporary name [`Storage::write_file_atomic`] writes before renaming.
#[must_use]
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
