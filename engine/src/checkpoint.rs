//! Framing for fjord's internal checkpoint and snapshot files, and the
//! partition checkpoint itself.
//!
//! Every internal file (partition checkpoint, producer-state snapshot) is one
//! *frame*:
//!
//! ```text
//! magic: [u8; 4] | version: u16 | payload length: u32 | CRC-32C of payload: u32 | payload
//! ```
//!
//! all integers little-endian, the payload an rkyv 0.8 archive. The frame
//! exists because rkyv's validation only proves the bytes are *a* well-formed
//! archive, not that they are the archive that was written: the magic catches
//! a file of the wrong kind, the version a format change, the length a
//! truncated or extended file, and the CRC any flipped bit or byte (CRC-32C
//! detects every error burst of up to 32 bits, so every single-byte change).
//!
//! # Durability contract
//! This module only encodes and decodes bytes. Writers are expected to replace
//! a checkpoint file whole and atomically (`Storage::write_file_atomic`), so a
//! reader sees either the old or the new frame; a frame that fails to decode is
//! corruption, never a torn write to be tolerated.

use std::path::Path;

use crate::error::{Corruption, Error, Result};
use crate::leader_epoch;

/// Bytes before the payload: magic (4), version (2), length (4), CRC (4).
pub const FRAME_HEADER_BYTES: usize = 4 + 2 + 4 + 4;

/// Name of the partition checkpoint file inside a partition directory.
pub const PARTITION_CHECKPOINT_FILE: &str = "partition.checkpoint";

/// Magic of a partition checkpoint frame.
pub const PARTITION_CHECKPOINT_MAGIC: [u8; 4] = *b"FJPC";

/// Current format version of [`PartitionCheckpoint`] payloads.
pub const PARTITION_CHECKPOINT_VERSION: u16 = 1;

/// Wraps `payload` in a frame: header, then the payload unchanged.
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes, which no checkpoint is: a
/// frame cannot describe it, and writing a frame that will not decode would
/// lose the checkpoint silently.
#[must_use]
pub fn encode_frame(magic: [u8; 4], version: u16, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("checkpoint payload exceeds u32::MAX bytes");
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&magic);
    frame.extend_from_slice(&version.to_le_bytes());
    frame.extend_from_slice(&length.to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    debug_assert_eq!(frame.len(), FRAME_HEADER_BYTES + payload.len());
    frame
}

/// Checks a frame produced by [`encode_frame`] with the same `magic` and
/// `version`, and returns its payload.
///
/// On success the payload has exactly the length and CRC-32C the header
/// states, and the frame has no bytes after it.
///
/// # Errors
/// The [`Corruption`] when the input is shorter than a header, the magic
/// or version differ, the stated length does not match the bytes present
/// (truncated or trailing data), or the CRC does not match the payload.
pub fn decode_frame(
    magic: [u8; 4],
    version: u16,
    bytes: &[u8],
) -> std::result::Result<&[u8], Corruption> {
    let Some((header, payload)) = bytes.split_at_checked(FRAME_HEADER_BYTES) else {
        return Err(Corruption::ShorterThanHeader {
            length: bytes.len(),
            header_bytes: FRAME_HEADER_BYTES,
        });
    };
    let found = [header[0], header[1], header[2], header[3]];
    if found != magic {
        return Err(Corruption::WrongMagic {
            found,
            expected: magic,
        });
    }
    let found_version = u16::from_le_bytes([header[4], header[5]]);
    if found_version != version {
        return Err(Corruption::UnsupportedVersion {
            found: found_version,
            supported: version,
        });
    }
    let length = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    if usize::try_from(length).ok() != Some(payload.len()) {
        return Err(Corruption::LengthMismatch {
            stated: length,
            present: payload.len(),
        });
    }
    let stored = u32::from_le_bytes([header[10], header[11], header[12], header[13]]);
    let actual = crc32c::crc32c(payload);
    if stored != actual {
        return Err(Corruption::CrcMismatch { stored, actual });
    }
    Ok(payload)
}

/// Serializes an rkyv archive of `value`.
///
/// # Panics
/// Never in practice: rkyv serialization of integers and vectors into a
/// growable in-memory buffer has no failure path other than allocation
/// failure, which aborts anyway.
pub(crate) fn to_rkyv_bytes<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(value)
        .expect("in-memory rkyv serialization cannot fail")
        .into_vec()
}

/// Validates and deserializes an rkyv archive from `payload`, which may sit at
/// any alignment (it is copied into an aligned buffer first, because rkyv 0.8
/// rejects or misreads archives that are not aligned for their types).
///
/// # Errors
/// [`Corruption::InvalidArchive`] with rkyv's validation error when
/// `payload` is not a valid archive of `T`.
pub(crate) fn from_rkyv_bytes<T>(payload: &[u8]) -> std::result::Result<T, Corruption>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned)
        .map_err(|error| Corruption::InvalidArchive(error.to_string()))
}

/// What a partition needs at open to avoid rescanning its whole log: where
/// recovery starts, where the log starts, the high watermark, and the leader
/// epoch cache. Stored as [`PARTITION_CHECKPOINT_FILE`] in the partition
/// directory.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    /// Every batch below this offset was flushed and verified; recovery scans
    /// from here.
    pub recovery_point: i64,
    /// The first offset a consumer may read.
    pub log_start_offset: i64,
    /// The high watermark when the checkpoint was taken.
    pub high_watermark: i64,
    /// The leader epoch cache as `(epoch, start offset)`, both strictly
    /// ascending (see [`crate::leader_epoch::LeaderEpochCache`]).
    pub leader_epochs: Vec<(i32, i64)>,
}

impl PartitionCheckpoint {
    /// The checkpoint as a complete file: a frame with
    /// [`PARTITION_CHECKPOINT_MAGIC`] and [`PARTITION_CHECKPOINT_VERSION`]
    /// around the rkyv archive. The same checkpoint always encodes to the same
    /// bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(
            PARTITION_CHECKPOINT_MAGIC,
            PARTITION_CHECKPOINT_VERSION,
            &to_rkyv_bytes(self),
        )
    }

    /// Decodes a file written by [`PartitionCheckpoint::encode`].
    ///
    /// On success every offset is non-negative and `leader_epochs` is strictly
    /// ascending in both epoch and start offset, so it loads into a
    /// [`crate::leader_epoch::LeaderEpochCache`] without further checks.
    ///
    /// # Errors
    /// [`Error::CorruptCheckpoint`] naming `path` (used only for the message)
    /// when the frame, the archive or those invariants fail. Never panics,
    /// whatever `bytes` holds.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<PartitionCheckpoint> {
        let corrupt = |reason: Corruption| Error::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let payload = decode_frame(
            PARTITION_CHECKPOINT_MAGIC,
            PARTITION_CHECKPOINT_VERSION,
            bytes,
        )
        .map_err(corrupt)?;
        let checkpoint: PartitionCheckpoint = from_rkyv_bytes(payload).map_err(corrupt)?;
        for (name, value) in [
            ("recovery point", checkpoint.recovery_point),
            ("log start offset", checkpoint.log_start_offset),
            ("high watermark", checkpoint.high_watermark),
        ] {
            if value < 0 {
                return Err(corrupt(Corruption::Negative { what: name, value }));
            }
        }
        leader_epoch::validate_entries(checkpoint.leader_epochs.iter().copied())
            .map_err(corrupt)?;
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: [u8; 4] = *b"TEST";

    fn sample() -> PartitionCheckpoint {
        PartitionCheckpoint {
            recovery_point: 1_234,
            log_start_offset: 100,
            high_watermark: 1_200,
            leader_epochs: vec![(0, 0), (3, 500), (7, 1_100)],
        }
    }

    #[test]
    fn frame_round_trips_and_has_documented_layout() {
        let payload = b"hello checkpoint";
        let frame = encode_frame(MAGIC, 7, payload);
        assert_eq!(&frame[0..4], b"TEST");
        assert_eq!(&frame[4..6], &7u16.to_le_bytes());
        assert_eq!(&frame[6..10], &(payload.len() as u32).to_le_bytes());
        assert_eq!(&frame[10..14], &crc32c::crc32c(payload).to_le_bytes());
        assert_eq!(&frame[14..], payload);
        assert_eq!(decode_frame(MAGIC, 7, &frame), Ok(&payload[..]));
    }

    #[test]
    fn empty_payload_round_trips() {
        let frame = encode_frame(MAGIC, 1, &[]);
        assert_eq!(frame.len(), FRAME_HEADER_BYTES);
        assert_eq!(decode_frame(MAGIC, 1, &frame), Ok(&[][..]));
    }

    #[test]
    fn frame_of_another_kind_or_version_is_rejected_with_reason() {
        let frame = encode_frame(MAGIC, 1, b"x");
        assert_eq!(
            decode_frame(*b"OTHR", 1, &frame),
            Err(Corruption::WrongMagic {
                found: MAGIC,
                expected: *b"OTHR"
            })
        );
        assert_eq!(
            decode_frame(MAGIC, 2, &frame),
            Err(Corruption::UnsupportedVersion {
                found: 1,
                supported: 2
            })
        );
    }

    #[test]
    fn truncated_or_extended_frame_is_rejected() {
        let frame = encode_frame(MAGIC, 1, b"some payload");
        for cut in 0..frame.len() {
            assert!(
                decode_frame(MAGIC, 1, &frame[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut extended = frame.clone();
        extended.push(0);
        assert_eq!(
            decode_frame(MAGIC, 1, &extended),
            Err(Corruption::LengthMismatch {
                stated: 12,
                present: 13
            })
        );
    }

    #[test]
    fn every_single_byte_change_of_a_frame_is_detected() {
        let frame = encode_frame(MAGIC, 1, b"0123456789abcdef");
        for position in 0..frame.len() {
            for xor in [0x01u8, 0x80, 0xff] {
                let mut damaged = frame.clone();
                damaged[position] ^= xor;
                assert!(
                    decode_frame(MAGIC, 1, &damaged).is_err(),
                    "byte {position} ^ {xor:#x} went undetected"
                );
            }
        }
    }

    #[test]
    fn partition_checkpoint_round_trips_deterministically() {
        let checkpoint = sample();
        let bytes = checkpoint.encode();
        assert_eq!(bytes, checkpoint.encode());
        let decoded = PartitionCheckpoint::decode(Path::new("p"), &bytes).unwrap();
        assert_eq!(decoded, checkpoint);
    }

    #[test]
    fn partition_checkpoint_decodes_from_unaligned_bytes() {
        let bytes = sample().encode();
        for shift in 1..16 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(&bytes);
            let decoded = PartitionCheckpoint::decode(Path::new("p"), &shifted[shift..]).unwrap();
            assert_eq!(decoded, sample());
        }
    }

    #[test]
    fn every_single_byte_flip_of_a_partition_checkpoint_is_corruption_not_a_panic() {
        let bytes = sample().encode();
        let path = Path::new("/data/t-0/partition.checkpoint");
        for position in 0..bytes.len() {
            for xor in 1..=255u8 {
                let mut damaged = bytes.clone();
                damaged[position] ^= xor;
                match PartitionCheckpoint::decode(path, &damaged) {
                    Err(Error::CorruptCheckpoint { path: reported, .. }) => {
                        assert_eq!(reported, path);
                    }
                    other => panic!("byte {position} ^ {xor:#x}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn well_framed_garbage_is_corruption_not_a_panic() {
        let path = Path::new("p");
        for payload in [&b""[..], b"\x00", &[0xffu8; 64], &[0u8; 64]] {
            let bytes = encode_frame(
                PARTITION_CHECKPOINT_MAGIC,
                PARTITION_CHECKPOINT_VERSION,
                payload,
            );
            assert!(matches!(
                PartitionCheckpoint::decode(path, &bytes),
                Err(Error::CorruptCheckpoint { .. })
            ));
        }
    }

    #[test]
    fn well_framed_checkpoint_breaking_invariants_is_corruption() {
        let path = Path::new("p");
        let negative = PartitionCheckpoint {
            high_watermark: -1,
            ..sample()
        };
        let unordered = PartitionCheckpoint {
            leader_epochs: vec![(3, 500), (2, 600)],
            ..sample()
        };
        for checkpoint in [negative, unordered] {
            let error = PartitionCheckpoint::decode(path, &checkpoint.encode()).unwrap_err();
            assert!(matches!(error, Error::CorruptCheckpoint { .. }), "{error}");
        }
    }
}
