//! The controller quorum's state machine: openraft's [`RaftStateMachine`]
//! over the metadata image.
//!
//! Committed entries are applied in log order with the pure
//! [`MetadataImage::apply`], and every new image is published to the
//! caller's [`ArcSwap`] once the entries of an `apply` call are in (and a
//! counter of publications wakes whoever waits for one): readers never see
//! an image of uncommitted records, nor one that goes back. A
//! batch that does not apply leaves the image unchanged, on every voter
//! alike, and its proposer is told why ([`BatchOutcome`]).
//!
//! # Snapshots
//! A snapshot is the image as the metadata log's snapshot frame
//! ([`crate::controller::log::encode_snapshot`]: the records that rebuild
//! it, with the index after the last entry it covers as its end offset);
//! that is what a leader streams to a follower too far behind. It is kept in
//! `raft.snapshot` in the log directory: a frame (magic `FJQM`) around
//! openraft's snapshot metadata (last log id, membership, id), followed by
//! the snapshot frame.
//!
//! # Durability contract
//! The image lives in memory; what survives a restart is the snapshot
//! (replaced atomically: temporary file, `fsync`, rename, directory sync,
//! before `build_snapshot` or `install_snapshot` returns) and the log after
//! it, which openraft applies again. A snapshot never replaces a newer one.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use fjord_engine::checkpoint::encode_frame;
use fjord_engine::Offset;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use super::error::QuorumError;
use super::log_store::{encode_postcard, TEMPORARY_SUFFIX};
use super::types::{BatchOutcome, ControllerNode, MetadataTypes, NodeId, Rejection};
use crate::controller::log::{
    decode_snapshot, encode_snapshot, io_error, read_frame, sync_dir, write_synced,
};
use crate::metadata::MetadataImage;

/// The snapshot file.
pub const SNAPSHOT_FILE: &str = "raft.snapshot";
const META_MAGIC: [u8; 4] = *b"FJQM";
const META_VERSION: u16 = 1;

type StoreResult<T> = Result<T, StorageError<NodeId>>;
type Meta = SnapshotMeta<NodeId, ControllerNode>;

/// The quorum's [`RaftStateMachine`]; see the module documentation.
pub struct StateMachine {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, ControllerNode>,
    published: Arc<ArcSwap<MetadataImage>>,
    /// Counts the images published, for those who wait for the next one.
    publications: watch::Sender<u64>,
    snapshots: Arc<SnapshotFile>,
    /// Snapshots built by this process, to tell their ids apart.
    snapshots_built: u64,
}

/// The snapshot file, written by one builder or installer at a time.
pub struct SnapshotFile {
    dir: PathBuf,
    /// The last log id of the snapshot on disk; held while replacing it.
    current: Mutex<Option<LogId<NodeId>>>,
}

impl SnapshotFile {
    /// Replaces the snapshot with `data` described by `meta`, unless the one
    /// on disk is at least as new. Returns whether it did.
    fn replace(&self, meta: &Meta, data: &[u8]) -> Result<bool, QuorumError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_some() && *current >= meta.last_log_id {
            return Ok(false);
        }
        let mut bytes = encode_frame(META_MAGIC, META_VERSION, &encode_postcard(meta));
        bytes.extend_from_slice(data);
        let path = self.dir.join(SNAPSHOT_FILE);
        let temporary = self.dir.join(format!("{SNAPSHOT_FILE}{TEMPORARY_SUFFIX}"));
        write_synced(&temporary, &bytes)?;
        fs::rename(&temporary, &path).map_err(io_error("renaming", &temporary))?;
        sync_dir(&self.dir)?;
        *current = meta.last_log_id;
        Ok(true)
    }

    /// The snapshot on disk, if there is one: its metadata, the snapshot
    /// frame (checked when it is decoded or installed) and where that
    /// starts in the file.
    fn read(&self) -> Result<Option<(Meta, Vec<u8>, usize)>, QuorumError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error("reading", &path)(source).into()),
        };
        let (payload, meta_bytes) =
            read_frame(&bytes, META_MAGIC, META_VERSION).map_err(|reason| {
                QuorumError::CorruptFrame {
                    path: path.clone(),
                    position: 0,
                    reason,
                }
            })?;
        let meta: Meta =
            postcard::from_bytes(payload).map_err(|source| QuorumError::Undecodable {
                path: path.clone(),
                position: 0,
                source,
            })?;
        let data = bytes.split_off(meta_bytes);
        Ok(Some((meta, data, meta_bytes)))
    }

    /// The snapshot on disk with the image it holds, if there is one.
    fn read_image(&self) -> Result<Option<(Meta, MetadataImage)>, QuorumError> {
        let Some((meta, data, data_position)) = self.read()? else {
            return Ok(None);
        };
        let image = decode_image(&data).map_err(|error| match error {
            SnapshotError::Corrupt(reason) => QuorumError::CorruptFrame {
                path: self.dir.join(SNAPSHOT_FILE),
                position: data_position as u64,
                reason,
            },
            SnapshotError::DoesNotApply(error) => QuorumError::SnapshotDoesNotApply(error),
        })?;
        Ok(Some((meta, image)))
    }
}

/// Why snapshot bytes do not give an image.
#[derive(Debug, thiserror::Error)]
enum SnapshotError {
    #[error("corrupt snapshot: {0}")]
    Corrupt(fjord_engine::error::Corruption),
    #[error("the snapshot does not apply: {0}")]
    DoesNotApply(crate::metadata::ApplyError),
}

fn decode_image(data: &[u8]) -> Result<MetadataImage, SnapshotError> {
    let (_, records) = decode_snapshot(data).map_err(SnapshotError::Corrupt)?;
    MetadataImage::default()
        .apply(&records)
        .map_err(SnapshotError::DoesNotApply)
}

impl StateMachine {
    /// The state machine of the log directory `dir`: the snapshot's image
    /// (or an empty one), published to `published` at once.
    ///
    /// # Errors
    /// [`QuorumError`] if the snapshot cannot be read or does not decode.
    pub fn open(
        dir: &Path,
        published: Arc<ArcSwap<MetadataImage>>,
        publications: watch::Sender<u64>,
    ) -> Result<Self, QuorumError> {
        let snapshots = SnapshotFile {
            dir: dir.to_path_buf(),
            current: Mutex::new(None),
        };
        let (image, last_applied, membership) = match snapshots.read_image()? {
            Some((meta, image)) => {
                *snapshots
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = meta.last_log_id;
                (image, meta.last_log_id, meta.last_membership)
            }
            None => (MetadataImage::default(), None, StoredMembership::default()),
        };
        let image = Arc::new(image);
        published.store(Arc::clone(&image));
        Ok(Self {
            image,
            last_applied,
            membership,
            published,
            publications,
            snapshots: Arc::new(snapshots),
            snapshots_built: 0,
        })
    }

    /// Publishes the image and wakes whoever waits for a new one.
    fn publish(&self) {
        self.published.store(Arc::clone(&self.image));
        self.publications
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Applies one entry's payload; returns what the proposer is told.
    fn apply_entry(&mut self, entry: Entry<MetadataTypes>) -> BatchOutcome {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => BatchOutcome {
                applied: true,
                rejection: None,
            },
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                BatchOutcome {
                    applied: true,
                    rejection: None,
                }
            }
            EntryPayload::Normal(batch) => {
                let applied = batch
                    .decode()
                    .map_err(Rejection::from)
                    .and_then(|records| self.image.apply(&records).map_err(Rejection::from));
                match applied {
                    Ok(image) => {
                        self.image = Arc::new(image);
                        BatchOutcome {
                            applied: true,
                            rejection: None,
                        }
                    }
                    Err(rejection) => {
                        tracing::warn!(
                            index = entry.log_id.index,
                            %rejection,
                            "a committed metadata batch does not apply; the image is unchanged"
                        );
                        BatchOutcome {
                            applied: false,
                            rejection: Some(rejection),
                        }
                    }
                }
            }
        }
    }
}

/// Builds a snapshot of the image as it was when asked.
pub struct SnapshotBuilder {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, ControllerNode>,
    snapshots: Arc<SnapshotFile>,
    snapshot_id: String,
}

impl RaftSnapshotBuilder<MetadataTypes> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<MetadataTypes>> {
        let end = self.last_applied.map_or(0, |last| last.index + 1);
        let data = encode_snapshot(Offset(end as i64), &self.image.records());
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        };
        self.snapshots
            .replace(&meta, &data)
            .map_err(|error| StorageIOError::write_snapshot(None, AnyError::new(&error)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<MetadataTypes> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, ControllerNode>,
    )> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<BatchOutcome>>
    where
        I: IntoIterator<Item = Entry<MetadataTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let outcomes: Vec<BatchOutcome> = entries
            .into_iter()
            .map(|entry| self.apply_entry(entry))
            .collect();
        self.publish();
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        let snapshot_id = match self.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, self.snapshots_built),
            None => format!("none-{}", self.snapshots_built),
        };
        SnapshotBuilder {
            image: Arc::clone(&self.image),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: Arc::clone(&self.snapshots),
            snapshot_id,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let image = decode_image(&data).map_err(|error| {
            StorageIOError::read_snapshot(signature.clone(), AnyError::new(&error))
        })?;
        self.snapshots
            .replace(meta, &data)
            .map_err(|error| StorageIOError::write_snapshot(signature, AnyError::new(&error)))?;
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<MetadataTypes>>> {
        let snapshot = self
            .snapshots
            .read()
            .map_err(|error| StorageIOError::read_snapshot(None, AnyError::new(&error)))?;
        Ok(snapshot.map(|(meta, data, _)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
