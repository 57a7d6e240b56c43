//! The real disk: glommio `DmaFile`s opened with `O_DIRECT`, driven by the
//! shard's io_uring.
//!
//! This is the only file in the engine's storage path that names glommio
//! types. Segment data never goes through the page cache: writes are
//! block-aligned DMA from `DmaBuffer`s (which glommio carves from the
//! executor's registered `io_memory` when it can), reads are DMA into fresh
//! buffers, split into I/Os of at most [`READ_IO_BYTES`] (less while
//! appends are being written) that each shard issues one at a time, each
//! after the writes already issued have finished, so reads never queue
//! ahead of appends at the device. Small metadata files (checkpoints,
//! indexes of closed segments) use ordinary buffered I/O with fsync and
//! rename, since they are written rarely and read once (at open, or a
//! closed segment's indexes at its first lookup); that I/O, directory
//! listings and removals run on the shard's blocking pool.
//!
//! Every method must run on a glommio executor thread.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use event_listener::Event;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::sync::Semaphore;

use super::{temporary_path, AlignedBuffer, Storage, StorageFile, BLOCK_BYTES};

impl AlignedBuffer for DmaBuffer {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
}

/// One `O_DIRECT` file.
pub struct DirectFile(DmaFile);

/// The most bytes one read I/O asks for; larger reads are split. 4 MiB
/// took about 17% less broker CPU for a cold catch-up read at the same
/// (disk-bound) throughput, but the first append after a quiet spell would
/// wait behind up to 4 MiB at the device (`bench/RESULTS.md`, session 6).
pub const READ_IO_BYTES: usize = 1 << 20;

/// The most bytes one read I/O asks for while appends are being written
/// (any shard wrote within [`WRITES_RECENT`]): an append queued behind a
/// 64 KiB read waits a sixteenth of what it waits behind 1 MiB. With a cold
/// catch-up reader on the producer's core, the produce p99 was 1.0-1.6 ms
/// with 128 KiB reads against 1.8-2.2 ms with 256 KiB, and 0.80-1.35 ms
/// with 64 KiB against 0.97-1.34 ms with 128 KiB, for a reader about 5%
/// slower while producers write (`bench/RESULTS.md`, session 5).
pub const READ_IO_BYTES_WHILE_WRITING: usize = 64 << 10;

/// How long after any shard's last write reads stay small.
pub const WRITES_RECENT: Duration = Duration::from_millis(20);

/// When any shard last issued a write, in nanoseconds since
/// [`clock_origin`]; 0 before the first.
static LAST_WRITE_NANOS: AtomicU64 = AtomicU64::new(0);

fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn nanos_since_origin() -> u64 {
    u64::try_from(clock_origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The size of the next read I/O: small while appends are being written.
fn read_io_bytes() -> usize {
    let last_write = LAST_WRITE_NANOS.load(Ordering::Relaxed);
    let recent = u64::try_from(WRITES_RECENT.as_nanos()).unwrap_or(u64::MAX);
    if last_write != 0 && nanos_since_origin().saturating_sub(last_write) < recent {
        READ_IO_BYTES_WHILE_WRITING
    } else {
        READ_IO_BYTES
    }
}

/// Read I/Os a shard keeps in flight, all its files together.
///
/// An append waits at the device behind every read queued before it: on
/// the disk measured in `bench/RESULTS.md`, a 64 KiB write took 0.06 ms
/// alone, 0.5 ms behind one 1 MiB read and 4.6 ms behind two 8 MiB reads,
/// while sequential 1 MiB reads at depth 1 already ran at 1.9 GB/s. So
/// each shard reads one I/O at a time, of [`READ_IO_BYTES`], or of
/// [`READ_IO_BYTES_WHILE_WRITING`] while appends are being written:
/// catch-up readers keep the disk busy without burying the appends.
pub const READS_IN_FLIGHT_PER_SHARD: u64 = 1;

/// The longest a read waits for the writes issued before it.
pub const READ_WAIT_FOR_APPENDS: Duration = Duration::from_millis(1);

/// How often a read waiting for appends looks again when appends of other
/// shards are what it waits for (this shard's own wake it at once).
const REMOTE_APPENDS_RECHECK: Duration = Duration::from_micros(50);

/// Writes issued and finished by every shard: the device is shared.
static WRITES_ISSUED: AtomicU64 = AtomicU64::new(0);
static WRITES_DONE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The shard's turns at the disk for reads.
    static READ_GATE: Rc<Semaphore> = Rc::new(Semaphore::new(READS_IN_FLIGHT_PER_SHARD));
    /// Told whenever one of this shard's writes finishes.
    static WRITE_DONE_HERE: Rc<Event> = Rc::new(Event::new());
}

/// Counts one write as done when dropped, whether it finished or was
/// abandoned, and wakes this shard's reads waiting for it.
struct WriteInFlight;

impl WriteInFlight {
    fn issue() -> Self {
        WRITES_ISSUED.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        WRITES_DONE.fetch_add(1, Ordering::Release);
        WRITE_DONE_HERE.with(|done| done.notify(usize::MAX));
    }
}

/// Waits until as many writes have finished as had been issued when it was
/// called, at most `limit` ([`READ_WAIT_FOR_APPENDS`] for reads). Writes
/// are counted, not named: one issued later that finishes first counts too,
/// which at worst lets a read go a turn early.
///
/// A read issued while an append is at the device slows that append: on
/// the disk measured, a cold catch-up reader on the producer's core took the
/// append's device time at p99 from about 0.45 ms to 0.6 ms, and the
/// produce p99 to 1.6-2.7x its idle value; reads that first let the appends
/// already issued finish brought it to 1.5-1.9x (six runs of each), for a
/// reader about 6% slower (`bench/RESULTS.md`, session 6). Appends issued
/// after the read started waiting do not hold it, so a reader under a
/// stream of appends still gets every other turn at the device.
async fn appends_issued_before_done(limit: Duration) {
    let issued = WRITES_ISSUED.load(Ordering::Relaxed);
    if WRITES_DONE.load(Ordering::Acquire) >= issued {
        return;
    }
    let done_here = WRITE_DONE_HERE.with(Rc::clone);
    let deadline = Instant::now() + limit;
    loop {
        let done = done_here.listen();
        if WRITES_DONE.load(Ordering::Acquire) >= issued {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        futures_lite::future::or(
            done,
            glommio::timer::sleep(left.min(REMOTE_APPENDS_RECHECK)),
        )
        .await;
    }
}

impl StorageFile for DirectFile {
    type Buffer = DmaBuffer;

    async fn write_at(&self, buffer: Rc<DmaBuffer>, position: u64) -> io::Result<usize> {
        debug_assert_eq!(position % BLOCK_BYTES as u64, 0);
        LAST_WRITE_NANOS.store(nanos_since_origin().max(1), Ordering::Relaxed);
        let _in_flight = WriteInFlight::issue();
        let mut write = std::pin::pin!(self.0.write_rc_at(buffer, position));
        // The first poll submits the write: fjord's glommio hands writes to
        // the kernel when they are issued (vendor/glommio/FJORD-PATCHES.md).
        if let Some(result) = futures_lite::future::poll_once(&mut write).await {
            return Ok(result?);
        }
        // A write that grows the file (every append) is handed by the file
        // system to an io_uring worker thread, which inherits this shard's
        // CPU and, woken, waits for the shard to give it up: up to a whole
        // scheduler slice behind a busy shard. Giving up the CPU here lets
        // it issue the write to the device at once.
        // SAFETY: `sched_yield` has no preconditions.
        unsafe { libc::sched_yield() };
        Ok(write.await?)
    }

    async fn read_at(&self, position: u64, len: usize) -> io::Result<Bytes> {
        let gate = READ_GATE.with(Rc::clone);
        let mut bytes = BytesMut::with_capacity(len);
        let mut at = position;
        while bytes.len() < len {
            let piece = (len - bytes.len()).min(read_io_bytes());
            let read = {
                let _turn = gate
                    .acquire_static_permit(1)
                    .await
                    .map_err(|error| io::Error::other(error.to_string()))?;
                appends_issued_before_done(READ_WAIT_FOR_APPENDS).await;
                self.0.read_at(at, piece).await?
            };
            bytes.extend_from_slice(&read);
            if read.len() < piece {
                break;
            }
            at += piece as u64;
        }
        Ok(bytes.freeze())
    }

    async fn fdatasync(&self) -> io::Result<()> {
        Ok(self.0.fdatasync().await?)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        Ok(self.0.truncate(len).await?)
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.0.file_size().await?)
    }

    async fn close(self) -> io::Result<()> {
        Ok(self.0.close().await?)
    }
}

/// Settles glommio's poll-ring probe for the device holding `dir`, on the
/// calling executor thread, before any segment is opened there.
///
/// glommio decides once per thread and device whether `O_DIRECT` reads may
/// go to its `IOPOLL` ring by reading the first block of the first file
/// dma-opened on the device. When that file is empty (a partition created
/// on a fresh data directory) the read ends at EOF without reaching the
/// device, the probe wrongly answers yes, and from then on every segment
/// read on a device without poll queues (virtio and most cloud disks)
/// fails with EOPNOTSUPP (os error 95). Opening a file that holds a whole
/// block first makes the probe read the device. The probe file is removed.
///
/// # Errors
/// Creating, opening or removing the probe file failed.
pub async fn settle_poll_ring_probe(dir: &Path, shard: usize) -> io::Result<()> {
    let path = dir.join(format!(".poll-ring-probe-{shard}"));
    let written = path.clone();
    off_core(move || fs::write(written, vec![0u8; 4 * BLOCK_BYTES])).await?;
    let file = OpenOptions::new().read(true).dma_open(&path).await?;
    file.close().await?;
    off_core(move || fs::remove_file(path)).await
}

/// Runs a blocking file-system call (fsync, rename, unlink) on glommio's
/// blocking thread pool, so the shard's core keeps serving its other
/// partitions meanwhile.
async fn off_core<T: Send + 'static>(
    call: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    glommio::executor().spawn_blocking(call).await
}

fn sync_dir_blocking(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// The sorted names of the entries of `path` whose type `keep` accepts.
fn list_dir_blocking(path: &Path, keep: impl Fn(fs::FileType) -> bool) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if !keep(entry.file_type()?) {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The local file system, segment data through `O_DIRECT`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage;

impl Storage for DmaStorage {
    type File = DirectFile;

    fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        debug_assert_eq!(len % BLOCK_BYTES, 0);
        glommio::allocate_dma_buffer(len)
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<DirectFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await?;
        Ok(DirectFile(file))
    }

    fn open_for_send(&self, path: &Path) -> io::Result<Option<fs::File>> {
        fs::File::open(path).map(Some)
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        off_core(move || fs::create_dir_all(path)).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_path_buf();
        off_core(move || list_dir_blocking(&path, |_| true)).await
    }

    async fn list_subdirectories(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_path_buf();
        off_core(move || list_dir_blocking(&path, |kind| kind.is_dir())).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        off_core(move || match fs::remove_file(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        off_core(move || fs::remove_dir_all(path)).await
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        off_core(move || sync_dir_blocking(&path)).await
    }

    async fn write_file_atomic(&self, path: &Path, content: Vec<u8>) -> io::Result<()> {
        let path = path.to_path_buf();
        off_core(move || {
            let temporary = temporary_path(&path);
            {
                let mut file = fs::File::create(&temporary)?;
                file.write_all(&content)?;
                file.sync_data()?;
            }
            fs::rename(&temporary, &path)?;
            match path.parent() {
                Some(parent) => sync_dir_blocking(parent),
                None => Ok(()),
            }
        })
        .await
    }

    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let path = path.to_path_buf();
        off_core(move || match fs::read(path) {
            Ok(content) => Ok(Some(content)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use futures_lite::future;
    use glommio::LocalExecutorBuilder;

    use super::*;

    /// Runs `test` on an executor of its own, one test at a time: the write
    /// counters are the process's.
    fn on_executor<T: Future<Output = ()> + 'static>(test: impl FnOnce() -> T + Send + 'static) {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        LocalExecutorBuilder::default()
            .spawn(test)
            .expect("executor")
            .join()
            .expect("test ran");
    }

    /// Fails the test instead of hanging it.
    async fn within_10_s(wait: impl Future<Output = ()>) {
        let timed_out = async {
            glommio::timer::sleep(Duration::from_secs(10)).await;
            panic!("still waiting after 10 s");
        };
        future::or(wait, timed_out).await;
    }

    #[test]
    fn reads_return_exactly_the_bytes_asked_for_or_up_to_the_end_of_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("segment");
        // Not a multiple of the block: the last read ends short.
        let content: Vec<u8> = (0..(5 * READ_IO_BYTES / 2 + 1000))
            .map(|at| u8::try_from(at * 7 % 251).expect("below 251"))
            .collect();
        fs::write(&path, &content).expect("the file");
        let dir_path = dir.path().to_owned();
        on_executor(move || async move {
            settle_poll_ring_probe(&dir_path, 0)
                .await
                .expect("the probe");
            let file = DmaStorage.open(&path, false).await.expect("opened");
            let size = content.len() as u64;
            // Unaligned start and length, over several read I/Os.
            for (position, len) in [(0, 10), (4096 * 3 + 17, 2 * READ_IO_BYTES + 5), (1, 4095)] {
                let read = file.read_at(position, len).await.expect("read");
                let at = usize::try_from(position).expect("small");
                assert_eq!(
                    &read[..],
                    &content[at..at + len],
                    "{len} bytes at {position}"
                );
            }
            let near_end = file.read_at(size - 50, 1000).await.expect("read");
            assert_eq!(&near_end[..], &content[content.len() - 50..]);
            assert!(file
                .read_at(size + 4096, 10)
                .await
                .expect("read")
                .is_empty());
            assert!(file.read_at(0, 0).await.expect("read").is_empty());
            file.close().await.expect("closed");
        });
    }

    #[test]
    fn a_read_waits_for_the_writes_issued_before_it() {
        on_executor(|| async {
            let write = WriteInFlight::issue();
            let mut wait = Box::pin(appends_issued_before_done(Duration::from_secs(60)));
            assert!(
                future::poll_once(&mut wait).await.is_none(),
                "went with a write in flight"
            );
            drop(write);
            within_10_s(wait).await;
        });
    }

    #[test]
    fn writes_issued_after_a_read_started_waiting_do_not_hold_it() {
        on_executor(|| async {
            let earlier = WriteInFlight::issue();
            let mut wait = Box::pin(appends_issued_before_done(Duration::from_secs(60)));
            assert!(future::poll_once(&mut wait).await.is_none());
            let later = WriteInFlight::issue();
            drop(earlier);
            within_10_s(wait).await;
            drop(later);
        });
    }

    #[test]
    fn a_read_goes_after_its_limit_behind_a_write_that_never_finishes() {
        on_executor(|| async {
            let stuck = WriteInFlight::issue();
            within_10_s(appends_issued_before_done(Duration::from_millis(5))).await;
            drop(stuck);
        });
    }
}
