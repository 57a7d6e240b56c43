//! A node's identity on disk: Kafka's `meta.properties` in every data
//! directory.
//!
//! Each directory the node writes (`log.dirs`, and `metadata.log.dir` when it
//! is elsewhere) carries a `meta.properties` naming the cluster it belongs
//! to and the node that owns it, in Kafka's v1 format:
//!
//! ```text
//! version=1
//! cluster.id=MkU3OEVBNTcwNTJENDM2Qg
//! node.id=1
//! directory.id=J8aAPcfLQt2bqs1JT_rMgQ
//! ```
//!
//! It exists so that a directory can never be used by the wrong cluster or
//! the wrong node: a disk moved between machines, a config pointing at
//! another node's directory, or a node started against a cluster it was never
//! part of would otherwise serve another cluster's data as its own (and, once
//! replication lands, truncate or replicate it under the wrong identity). At
//! every start [`ensure`] reads each directory's file and refuses to start,
//! naming the directory and both ids, if one names another cluster than the
//! others (or than `cluster.id` when that is configured), or another node
//! than `node.id`. The wording is Kafka's (`Invalid cluster.id in: ...`,
//! `Stored node id ... doesn't match ...`), so an operator's searches find
//! the same answers.
//!
//! Kafka 4 refuses to start on an unformatted directory until
//! `kafka-storage format` has written this file; fjord formats on first start
//! instead, because `fjord` with no arguments must run a node: a directory
//! without `meta.properties` gets one with the cluster id the other
//! directories hold, else the configured `cluster.id`, else a new random id
//! in Kafka's form (a UUID in 22 unpadded base64url characters). A directory
//! with data but no `meta.properties` (written before fjord kept one) is
//! adopted the same way. As in Kafka 3.7+, every directory also gets its own
//! random `directory.id` (added to a file that lacks one); two directories
//! with the same one (a copied directory) are refused.
//!
//! Durability: the file is written to `meta.properties.tmp`, fsynced, renamed
//! over `meta.properties` and the directory fsynced, so after a crash the
//! file is either absent or whole; a start after a crash mid-way writes it
//! again with the same ids. A torn or garbage file (which fjord never
//! leaves, but a disk or a hand may) is an error naming the file, never a
//! guess. This runs once at start, before the shards, with blocking file
//! APIs.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use uuid::Uuid;

use crate::config::parse_properties;

/// The file's name in each data directory, as Kafka's.
pub const META_PROPERTIES_FILE: &str = "meta.properties";
/// Where the file is written before it is renamed into place.
const META_PROPERTIES_TEMP_FILE: &str = "meta.properties.tmp";
/// The only `version` fjord reads and writes: KRaft's (v0 is the format
/// of Kafka on Zookeeper, with `broker.id`).
const VERSION: u32 = 1;
/// Characters of a Kafka UUID in its base64url form (16 bytes, unpadded).
const UUID_CHARS: usize = 22;

/// A Kafka UUID as Kafka prints it: 16 bytes in 22 unpadded base64url
/// characters (`kafka-storage random-uuid`'s form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KafkaUuid(Uuid);

/// A string that is not a Kafka UUID.
#[derive(Debug, thiserror::Error)]
#[error(
    "not a Kafka UUID: expected 22 base64url characters encoding 16 bytes, \
     as `kafka-storage random-uuid` prints"
)]
pub struct InvalidUuid;

impl KafkaUuid {
    /// A new random UUID. As Kafka's `Uuid.randomUuid`, never one whose text
    /// starts with `-` (it would read as an option on a command line).
    #[must_use]
    pub fn random() -> Self {
        loop {
            let id = Self(Uuid::new_v4());
            if !id.to_string().starts_with('-') {
                return id;
            }
        }
    }
}

impl From<Uuid> for KafkaUuid {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for KafkaUuid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl FromStr for KafkaUuid {
    type Err = InvalidUuid;

    fn from_str(text: &str) -> Result<Self, InvalidUuid> {
        if text.len() != UUID_CHARS {
            return Err(InvalidUuid);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| InvalidUuid)?;
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| InvalidUuid)?;
        let id = Uuid::from_bytes(bytes);
        // Kafka reserves the zero UUID for "none".
        if id.is_nil() {
            return Err(InvalidUuid);
        }
        Ok(Self(id))
    }
}

/// The id of a cluster: every node's directories carry the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterId(pub KafkaUuid);

impl fmt::Display for ClusterId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl FromStr for ClusterId {
    type Err = InvalidUuid;

    fn from_str(text: &str) -> Result<Self, InvalidUuid> {
        text.parse().map(Self)
    }
}

/// The id of one data directory (KIP-858), distinct for each directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirectoryId(pub KafkaUuid);

impl fmt::Display for DirectoryId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// The contents of one `meta.properties`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    /// `cluster.id`.
    pub cluster_id: ClusterId,
    /// `node.id`.
    pub node_id: i32,
    /// `directory.id`: optional in v1 (files written before Kafka 3.7 lack
    /// it).
    pub directory_id: Option<DirectoryId>,
}

/// Why a node may not start on its data directories.
#[derive(Debug, thiserror::Error)]
pub enum MetaPropertiesError {
    /// Reading or writing a file failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a v1 `meta.properties` (torn, garbage, or from a
    /// ZooKeeper-mode Kafka).
    #[error("{}: not a valid meta.properties: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file names another cluster than the node's other directories or
    /// its configured `cluster.id` (Kafka's wording).
    #[error(
        "Invalid cluster.id in: {}. Expected {expected}, but read {found}. \
         This directory belongs to another cluster; point log.dirs elsewhere or, \
         if its data is not needed, remove the directory",
        path.display()
    )]
    ClusterIdMismatch {
        /// The `meta.properties` that differs.
        path: PathBuf,
        /// The id the node expected (configured, or read first).
        expected: ClusterId,
        /// The id the file holds.
        found: ClusterId,
    },
    /// The file names another node than `node.id` (Kafka's wording).
    #[error(
        "Stored node id {stored} doesn't match the configured node.id {configured} in {}. \
         If you moved your data, make sure your configured node id matches. If you intend \
         to create a new node, you should remove all data in your data directories.",
        path.display()
    )]
    NodeIdMismatch {
        /// The `meta.properties` that differs.
        path: PathBuf,
        /// The node id the file holds.
        stored: i32,
        /// `node.id`.
        configured: i32,
    },
    /// Two directories carry the same `directory.id` (one was copied from
    /// the other).
    #[error(
        "Duplicate directory.id {id} in {} and {}: each data directory must have its own",
        first.display(),
        second.display()
    )]
    DuplicateDirectoryId {
        /// The id both hold.
        id: DirectoryId,
        /// One `meta.properties`.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
}

impl MetaProperties {
    /// Reads a `meta.properties` text.
    fn parse(text: &str) -> Result<Self, String> {
        let pairs = parse_properties(text).map_err(|error| error.to_string())?;
        let get = |key: &str| {
            pairs
                .iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.as_str())
        };
        match get("version") {
            None => return Err("no version".to_owned()),
            Some("0") => {
                return Err(
                    "version 0 is a ZooKeeper-mode Kafka's; fjord runs only KRaft (version 1)"
                        .to_owned(),
                )
            }
            Some(version) if version != VERSION.to_string() => {
                return Err(format!("unknown version {version:?}"))
            }
            Some(_) => {}
        }
        let cluster_id = get("cluster.id")
            .ok_or("no cluster.id")?
            .parse()
            .map_err(|error| format!("cluster.id: {error}"))?;
        let node_id = get("node.id")
            .ok_or("no node.id")?
            .parse::<i32>()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or("node.id is not a non-negative integer")?;
        let directory_id = get("directory.id")
            .map(|id| id.parse().map(DirectoryId))
            .transpose()
            .map_err(|error| format!("directory.id: {error}"))?;
        Ok(Self {
            cluster_id,
            node_id,
            directory_id,
        })
    }

    /// The file's text.
    fn render(&self) -> String {
        let directory_id = self
            .directory_id
            .map(|id| format!("directory.id={id}\n"))
            .unwrap_or_default();
        format!(
            "# This directory's cluster and node (Kafka's meta.properties); written by fjord.\n\
             version={VERSION}\ncluster.id={}\nnode.id={}\n{directory_id}",
            self.cluster_id, self.node_id
        )
    }

    /// Reads `dir`'s `meta.properties`; `None` if there is none.
    ///
    /// # Errors
    /// [`MetaPropertiesError::Io`] if it cannot be read,
    /// [`MetaPropertiesError::Malformed`] if it is not a v1 file.
    pub fn read(dir: &Path) -> Result<Option<Self>, MetaPropertiesError> {
        let path = dir.join(META_PROPERTIES_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(MetaPropertiesError::Io {
                    context: "reading",
                    path,
                    source,
                })
            }
        };
        let text = String::from_utf8(bytes).map_err(|_| MetaPropertiesError::Malformed {
            path: path.clone(),
            reason: "not UTF-8 text".to_owned(),
        })?;
        Self::parse(&text)
            .map(Some)
            .map_err(|reason| MetaPropertiesError::Malformed { path, reason })
    }

    /// Writes this as `dir`'s `meta.properties`, durably: a temporary file,
    /// fsynced, renamed into place, then the directory fsynced.
    ///
    /// # Errors
    /// [`MetaPropertiesError::Io`] naming the step that failed.
    pub fn write(&self, dir: &Path) -> Result<(), MetaPropertiesError> {
        let temp = dir.join(META_PROPERTIES_TEMP_FILE);
        let path = dir.join(META_PROPERTIES_FILE);
        let io = |context, path: &Path| {
            let path = path.to_owned();
            move |source| MetaPropertiesError::Io {
                context,
                path,
                source,
            }
        };
        let mut file = std::fs::File::create(&temp).map_err(io("creating", &temp))?;
        file.write_all(self.render().as_bytes())
            .map_err(io("writing", &temp))?;
        file.sync_all().map_err(io("syncing", &temp))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(io("renaming into place", &path))?;
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("syncing", dir))?;
        Ok(())
    }
}

/// Checks (and, where missing, writes) `meta.properties` in every one of
/// `dirs` for node `node_id`, and returns the cluster's id; see the module
/// documentation. `dirs` must exist; the same directory named twice is
/// checked once. `configured` is `cluster.id` when the operator set it.
///
/// # Errors
/// [`MetaPropertiesError`] naming the directory: another cluster's or
/// another node's file, an unreadable or malformed file, two directories
/// with one `directory.id`, or a write that failed.
pub fn ensure(
    dirs: &[&Path],
    node_id: i32,
    configured: Option<ClusterId>,
) -> Result<ClusterId, MetaPropertiesError> {
    let mut unique: Vec<(PathBuf, PathBuf)> = Vec::new();
    for dir in dirs {
        let canonical = dir
            .canonicalize()
            .map_err(|source| MetaPropertiesError::Io {
                context: "resolving",
                path: dir.to_path_buf(),
                source,
            })?;
        if !unique.iter().any(|(_, seen)| *seen == canonical) {
            unique.push((dir.to_path_buf(), canonical));
        }
    }
    let mut found = Vec::with_capacity(unique.len());
    // The id every file must carry: the configured one, else the first read.
    let mut expected = configured;
    for (dir, _) in &unique {
        let properties = MetaProperties::read(dir)?;
        if let Some(properties) = &properties {
            let path = dir.join(META_PROPERTIES_FILE);
            match expected {
                Some(expected) if expected != properties.cluster_id => {
                    return Err(MetaPropertiesError::ClusterIdMismatch {
                        path,
                        expected,
                        found: properties.cluster_id,
                    })
                }
                _ => expected = Some(properties.cluster_id),
            }
            if properties.node_id != node_id {
                return Err(MetaPropertiesError::NodeIdMismatch {
                    path,
                    stored: properties.node_id,
                    configured: node_id,
                });
            }
        }
        found.push(properties);
    }
    let mut directory_ids: Vec<(DirectoryId, PathBuf)> = Vec::new();
    for ((dir, _), properties) in unique.iter().zip(&found) {
        if let Some(id) = properties.as_ref().and_then(|found| found.directory_id) {
            let path = dir.join(META_PROPERTIES_FILE);
            if let Some((_, first)) = directory_ids.iter().find(|(seen, _)| *seen == id) {
                return Err(MetaPropertiesError::DuplicateDirectoryId {
                    id,
                    first: first.clone(),
                    second: path,
                });
            }
            directory_ids.push((id, path));
        }
    }
    let cluster_id = expected.unwrap_or_else(|| ClusterId(KafkaUuid::random()));
    for ((dir, _), properties) in unique.iter().zip(found) {
        if properties
            .as_ref()
            .is_some_and(|found| found.directory_id.is_some())
        {
            continue;
        }
        if properties.is_none() {
            if holds_data(dir)? {
                tracing::info!(dir = %dir.display(), %cluster_id,
                    "adopting a data directory written before meta.properties");
            } else {
                tracing::info!(dir = %dir.display(), %cluster_id, "formatting a new data directory");
            }
        }
        let directory_id = loop {
            let id = DirectoryId(KafkaUuid::random());
            if !directory_ids.iter().any(|(seen, _)| *seen == id) {
                break id;
            }
        };
        directory_ids.push((directory_id, dir.join(META_PROPERTIES_FILE)));
        MetaProperties {
            cluster_id,
            node_id,
            directory_id: Some(directory_id),
        }
        .write(dir)?;
    }
    Ok(cluster_id)
}

/// Whether `dir` holds anything but the files fjord creates before it
/// checks `meta.properties` (its lock, a temporary file of an interrupted
/// write).
fn holds_data(dir: &Path) -> Result<bool, MetaPropertiesError> {
    let entries = std::fs::read_dir(dir).map_err(|source| MetaPropertiesError::Io {
        context: "listing",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| MetaPropertiesError::Io {
            context: "listing",
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        if name != crate::DATA_DIR_LOCK_FILE && name != META_PROPERTIES_TEMP_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "MkU3OEVBNTcwNTJENDM2Qg";
    const OTHER_CLUSTER: &str = "J8aAPcfLQt2bqs1JT_rMgQ";

    fn cluster(text: &str) -> ClusterId {
        text.parse().unwrap()
    }

    #[test]
    fn kafka_uuids_are_22_base64url_characters_both_ways() {
        for _ in 0..100 {
            let id = KafkaUuid::random();
            let text = id.to_string();
            assert_eq!(text.len(), 22);
            assert!(!text.starts_with('-'));
            assert_eq!(text.parse::<KafkaUuid>().unwrap(), id);
        }
        assert_eq!(CLUSTER.parse::<ClusterId>().unwrap().to_string(), CLUSTER);
        for bad in [
            "",
            "fjord-cluster",
            "MkU3OEVBNTcwNTJENDM2Qg==",
            "MkU3OEVBNTcwNTJENDM2Q!",
            "AAAAAAAAAAAAAAAAAAAAAA",
            "MkU3OEVBNTcwNTJENDM2Q",
        ] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_fresh_directory_gets_a_generated_cluster_id_durably() {
        let dir = tempfile::tempdir().unwrap();
        let id = ensure(&[dir.path()], 3, None).unwrap();
        let written = MetaProperties::read(dir.path()).unwrap().unwrap();
        assert_eq!(written.cluster_id, id);
        assert_eq!(written.node_id, 3);
        assert!(written.directory_id.is_some());
        let text = std::fs::read_to_string(dir.path().join(META_PROPERTIES_FILE)).unwrap();
        assert!(text.contains("version=1\n"), "{text}");
        assert!(text.contains(&format!("cluster.id={id}\n")), "{text}");
        assert!(!dir.path().join(META_PROPERTIES_TEMP_FILE).exists());
    }

    #[test]
    fn a_restart_reads_the_same_ids_back_and_rewrites_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(&[dir.path()], 1, None).unwrap();
        let before = std::fs::read_to_string(dir.path().join(META_PROPERTIES_FILE)).unwrap();
        assert_eq!(ensure(&[dir.path()], 1, None).unwrap(), first);
        assert_eq!(ensure(&[dir.path()], 1, Some(first)).unwrap(), first);
        let after = std::fs::read_to_string(dir.path().join(META_PROPERTIES_FILE)).unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn a_configured_cluster_id_is_written_to_every_directory() {
        let logs = tempfile::tempdir().unwrap();
        let metadata = tempfile::tempdir().unwrap();
        let id = ensure(&[logs.path(), metadata.path()], 2, Some(cluster(CLUSTER))).unwrap();
        assert_eq!(id.to_string(), CLUSTER);
        let a = MetaProperties::read(logs.path()).unwrap().unwrap();
        let b = MetaProperties::read(metadata.path()).unwrap().unwrap();
        assert_eq!((a.cluster_id, b.cluster_id), (id, id));
        assert_ne!(a.directory_id, b.directory_id);
    }

    #[test]
    fn another_clusters_directory_is_refused_naming_both_ids() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&[dir.path()], 1, Some(cluster(OTHER_CLUSTER))).unwrap();
        let error = ensure(&[dir.path()], 1, Some(cluster(CLUSTER))).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "Invalid cluster.id in: {}. Expected {CLUSTER}, but read {OTHER_CLUSTER}",
                dir.path().join(META_PROPERTIES_FILE).display()
            )),
            "{text}"
        );

        // Two directories of one node that disagree, nothing configured.
        let other = tempfile::tempdir().unwrap();
        ensure(&[other.path()], 1, Some(cluster(CLUSTER))).unwrap();
        let error = ensure(&[dir.path(), other.path()], 1, None).unwrap_err();
        assert!(
            matches!(error, MetaPropertiesError::ClusterIdMismatch { ref path, .. }
                if *path == other.path().join(META_PROPERTIES_FILE)),
            "{error}"
        );
    }

    #[test]
    fn another_nodes_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&[dir.path()], 1, None).unwrap();
        let text = ensure(&[dir.path()], 2, None).unwrap_err().to_string();
        assert!(
            text.contains(&format!(
                "Stored node id 1 doesn't match the configured node.id 2 in {}",
                dir.path().join(META_PROPERTIES_FILE).display()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_data_directory_from_before_meta_properties_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("orders-0")).unwrap();
        std::fs::write(dir.path().join("orders-0/00000000000000000000.log"), b"x").unwrap();
        assert!(holds_data(dir.path()).unwrap());
        let id = ensure(&[dir.path()], 1, None).unwrap();
        assert_eq!(
            MetaProperties::read(dir.path())
                .unwrap()
                .unwrap()
                .cluster_id,
            id
        );
        assert!(dir
            .path()
            .join("orders-0/00000000000000000000.log")
            .exists());
    }

    #[test]
    fn a_file_without_directory_id_gets_one_and_keeps_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(META_PROPERTIES_FILE),
            format!(
                "#\n#Tue Dec 05 10:00:00 UTC 2023\nnode.id=4\nversion=1\ncluster.id={CLUSTER}\n"
            ),
        )
        .unwrap();
        assert_eq!(ensure(&[dir.path()], 4, None).unwrap(), cluster(CLUSTER));
        let read = MetaProperties::read(dir.path()).unwrap().unwrap();
        assert_eq!(read.cluster_id, cluster(CLUSTER));
        assert!(read.directory_id.is_some());
    }

    #[test]
    fn a_copied_directory_is_refused_by_its_duplicate_directory_id() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        ensure(&[a.path()], 1, None).unwrap();
        std::fs::copy(
            a.path().join(META_PROPERTIES_FILE),
            b.path().join(META_PROPERTIES_FILE),
        )
        .unwrap();
        let error = ensure(&[a.path(), b.path()], 1, None).unwrap_err();
        assert!(
            matches!(error, MetaPropertiesError::DuplicateDirectoryId { .. }),
            "{error}"
        );
    }

    #[test]
    fn the_same_directory_named_twice_is_checked_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = ensure(&[dir.path(), &dir.path().join(".")], 1, None).unwrap();
        assert_eq!(ensure(&[dir.path()], 1, None).unwrap(), id);
    }

    #[test]
    fn torn_or_garbage_files_are_clear_errors() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "no version"),
            (b"version=1\ncluster.id=", "cluster.id: not a Kafka UUID"),
            (b"version=1\nnode.id=1\n", "no cluster.id"),
            (b"\xff\xfe\x00garbage", "not UTF-8 text"),
            (
                b"version=1\ncluster.id=MkU3OEVBNTcwNTJENDM2Qg\nnode",
                "expected key=value",
            ),
            (
                b"version=1\ncluster.id=MkU3OEVBNTcwNTJENDM2Qg\nnode.id=-3\n",
                "node.id",
            ),
            (b"version=0\nbroker.id=1\ncluster.id=x\n", "ZooKeeper"),
            (b"version=7\n", "unknown version"),
        ];
        for (contents, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(META_PROPERTIES_FILE), contents).unwrap();
            let error = ensure(&[dir.path()], 1, None).unwrap_err();
            let text = error.to_string();
            assert!(
                matches!(error, MetaPropertiesError::Malformed { .. }),
                "{contents:?}: {text}"
            );
            assert!(text.contains(expected), "{contents:?}: {text}");
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
        }
    }
}
