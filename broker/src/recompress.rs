//! Recompression for topics whose `compression.type` is not `producer`.
//!
//! Only the records section of a batch is compressed, so a batch is
//! recompressed by decompressing that section, compressing it with the
//! topic's codec, and rewriting the three header fields that depend on it
//! (`batchLength`, the codec bits of `attributes`, and the CRC). Every other
//! header field (producer id, epoch, base sequence, timestamps) is kept, so
//! idempotence and ordering are unaffected, and the records themselves are
//! byte-for-byte what the producer sent (duplicate header keys included).

use bytes::Bytes;
use fjord_engine::batch::Compression;

/// The codec a topic's `compression.type` asks for; `None` for `producer`
/// (keep what the producer sent) or an unknown name.
#[must_use]
pub fn target_codec(compression_type: &str) -> Option<Compression> {
    match compression_type {
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// `batch` with its records section compressed with `target` instead of its
/// current codec; the batch itself when it already uses `target`.
///
/// # Errors
/// The engine's [`fjord_engine::Error::InvalidBatch`] if the records section
/// does not decompress (the producer's batch is corrupt) or the result is
/// too large for a batch.
pub fn recompress(batch: Bytes, target: Compression) -> fjord_engine::Result<Bytes> {
    fjord_engine::codec::recompress(batch, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_engine::batch::{records, validate_incoming};
    use fjord_engine::TimestampMs;

    #[test]
    fn every_codec_round_trips_the_same_records() {
        let values: Vec<Vec<u8>> = (0..50)
            .map(|n| format!("value {n} {}", "z".repeat(n)).into_bytes())
            .collect();
        let pairs: Vec<fjord_engine::batch::KeyValue<'_>> = values
            .iter()
            .map(|value| (Some(&b"key"[..]), Some(value.as_slice())))
            .collect();
        let original = Bytes::from(fjord_engine::batch::build_batch(
            &pairs,
            TimestampMs(7),
            None,
        ));
        let expected: Vec<_> = records(&original)
            .unwrap()
            .map(Result::unwrap)
            .map(|r| r.value.map(<[u8]>::to_vec))
            .collect();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let compressed = recompress(original.clone(), codec).unwrap();
            let header = validate_incoming(&compressed, 1 << 20).unwrap();
            assert_eq!(header.compression().unwrap(), codec);
            assert_eq!(header.record_count, 50);
            let back = recompress(compressed, Compression::None).unwrap();
            let got: Vec<_> = records(&back)
                .unwrap()
                .map(Result::unwrap)
                .map(|r| r.value.map(<[u8]>::to_vec))
                .collect();
            assert_eq!(got, expected, "{codec:?}");
        }
    }

    #[test]
    fn a_batch_already_in_the_target_codec_is_kept_as_is() {
        let original = Bytes::from(fjord_engine::batch::build_batch(
            &[(None, Some(&b"v"[..]))],
            TimestampMs(1),
            None,
        ));
        let kept = recompress(original.clone(), Compression::None).unwrap();
        assert_eq!(kept.as_ptr(), original.as_ptr());
    }
}
