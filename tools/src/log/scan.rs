//! Walking a segment file batch by batch, the way recovery does, but without
//! stopping at the first bad batch when its length can still be trusted.

use fjord_engine::batch::{crc_matches, scan_batch, BatchHeader, ScanOutcome};

/// One batch found in a segment.
#[derive(Clone, Debug)]
pub struct ScannedBatch {
    /// The decoded header (fields of a batch whose CRC fails may be damaged).
    pub header: BatchHeader,
    /// Byte position of the batch in the file.
    pub position: u64,
    /// `None` if the CRC matches, otherwise why the batch is invalid.
    pub invalid: Option<String>,
}

impl ScannedBatch {
    /// Whether the batch's CRC matches its bytes.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.invalid.is_none()
    }
}

/// How the bytes after the last batch found look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// The file ends exactly after a batch.
    Clean,
    /// Only zero bytes remain: an unwritten (preallocated or padded) tail.
    ZeroFilled { position: u64, bytes: u64 },
    /// The bytes look like the start of a batch but end before it does: a
    /// write torn by a crash.
    Torn { position: u64, reason: String },
    /// Bytes that are no batch; nothing after them can be located.
    Corrupt { position: u64, reason: String },
}

/// Everything found in a segment file.
#[derive(Clone, Debug)]
pub struct SegmentScan {
    /// Batches in file order, valid or not.
    pub batches: Vec<ScannedBatch>,
    /// What follows the last batch.
    pub tail: Tail,
}

/// Scans the bytes of a segment file from position 0.
///
/// A batch whose header parses and whose declared length fits in the file but
/// whose CRC does not match is reported as invalid and skipped by its length,
/// so one flipped bit does not hide the rest of the segment. Anything else
/// that is not a batch ends the scan with a [`Tail`]. Never panics, whatever
/// the bytes.
#[must_use]
pub fn scan_segment(bytes: &[u8]) -> SegmentScan {
    let mut batches = Vec::new();
    let mut position = 0usize;
    let tail = loop {
        let rest = &bytes[position..];
        if rest.is_empty() {
            break Tail::Clean;
        }
        if rest.iter().all(|&byte| byte == 0) {
            break Tail::ZeroFilled {
                position: position as u64,
                bytes: rest.len() as u64,
            };
        }
        match scan_batch(rest) {
            ScanOutcome::Valid(header) => {
                batches.push(ScannedBatch {
                    header,
                    position: position as u64,
                    invalid: None,
                });
                position += header.total_bytes();
            }
            ScanOutcome::Incomplete => {
                let reason = match BatchHeader::parse(rest) {
                    Ok(header) => format!(
                        "batch declares {} bytes but only {} remain",
                        header.total_bytes(),
                        rest.len()
                    ),
                    Err(_) => format!("{} bytes remain, fewer than a batch header", rest.len()),
                };
                break Tail::Torn {
                    position: position as u64,
                    reason,
                };
            }
            ScanOutcome::Invalid(reason) => {
                // A CRC mismatch over a whole, plausible batch: keep going by
                // its length. Any other reason means the length is garbage.
                let skippable = BatchHeader::parse(rest).ok().filter(|header| {
                    header.total_bytes() <= rest.len()
                        && !crc_matches(&rest[..header.total_bytes()])
                });
                let Some(header) = skippable else {
                    break Tail::Corrupt {
                        position: position as u64,
                        reason,
                    };
                };
                batches.push(ScannedBatch {
                    header,
                    position: position as u64,
                    invalid: Some(reason),
                });
                position += header.total_bytes();
            }
        }
    };
    SegmentScan { batches, tail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_engine::batch::build_batch;
    use fjord_engine::TimestampMs;

    fn two_batches() -> (Vec<u8>, usize) {
        let first = build_batch(&[(None, Some(b"a"))], TimestampMs(1), None);
        let second = build_batch(&[(None, Some(b"b"))], TimestampMs(2), None);
        let first_len = first.len();
        ([first, second].concat(), first_len)
    }

    #[test]
    fn a_flipped_byte_invalidates_one_batch_and_the_scan_goes_on() {
        let (mut bytes, first_len) = two_batches();
        *bytes.get_mut(first_len - 1).unwrap() ^= 0xff;
        let scan = scan_segment(&bytes);
        assert_eq!(scan.batches.len(), 2);
        assert!(!scan.batches[0].is_valid());
        assert!(scan.batches[1].is_valid());
        assert_eq!(scan.tail, Tail::Clean);
    }

    #[test]
    fn a_cut_batch_is_a_torn_tail_and_zeros_are_a_zero_tail() {
        let (bytes, first_len) = two_batches();
        let scan = scan_segment(&bytes[..bytes.len() - 3]);
        assert_eq!(scan.batches.len(), 1);
        assert!(matches!(scan.tail, Tail::Torn { position, .. } if position == first_len as u64));
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 100]);
        let scan = scan_segment(&padded);
        assert_eq!(
            scan.tail,
            Tail::ZeroFilled {
                position: bytes.len() as u64,
                bytes: 100
            }
        );
    }

    #[test]
    fn garbage_ends_the_scan_as_corrupt() {
        let (mut bytes, first_len) = two_batches();
        bytes[first_len + 16] = 7; // the second batch's magic byte
        let scan = scan_segment(&bytes);
        assert_eq!(scan.batches.len(), 1);
        assert!(matches!(scan.tail, Tail::Corrupt { .. }));
    }
}
