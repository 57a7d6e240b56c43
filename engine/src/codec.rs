//! Record-batch compression codecs: decompressing and compressing the
//! records section of a v2 batch.
//!
//! Only the records section (after the 61-byte header) of a batch is
//! compressed. The broker recompresses produced batches for topics whose
//! `compression.type` differs from the producer's, and the log cleaner
//! decompresses batches to filter their records and recompresses what
//! survives with the batch's own codec; both use these functions, so there
//! is one place that knows the codecs. The codecs themselves are the
//! `kafka-protocol` crate's (gzip, xerial-framed Snappy, LZ4 frame, zstd),
//! the framings Kafka clients produce.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{compute_crc, BatchHeader, Compression, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES};
use crate::error::{Error, Result};

/// The attribute bits (0-2) that name `codec`.
#[must_use]
pub fn codec_bits(codec: Compression) -> i16 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

/// The records section `input`, compressed with `codec`, decompressed.
///
/// # Errors
/// [`Error::InvalidBatch`] if `input` does not decompress.
pub fn decompress(codec: Compression, mut input: Bytes) -> Result<Bytes> {
    let drain = |buffer: &mut Bytes| Ok(buffer.copy_to_bytes(buffer.remaining()));
    let result = match codec {
        Compression::None => return Ok(input),
        Compression::Gzip => Gzip::decompress(&mut input, drain),
        Compression::Snappy => Snappy::decompress(&mut input, drain),
        Compression::Lz4 => Lz4::decompress(&mut input, drain),
        Compression::Zstd => Zstd::decompress(&mut input, drain),
    };
    result.map_err(|error| {
        Error::InvalidBatch(format!("cannot decompress {codec:?} records: {error}"))
    })
}

/// Appends `raw` (an uncompressed records section) compressed with `codec`
/// to `output`.
///
/// # Errors
/// [`Error::InvalidBatch`] if the codec fails.
pub fn compress(codec: Compression, raw: &[u8], output: &mut BytesMut) -> Result<()> {
    let fill = |buffer: &mut BytesMut| {
        buffer.put_slice(raw);
        Ok(())
    };
    let result = match codec {
        Compression::None => {
            output.put_slice(raw);
            return Ok(());
        }
        Compression::Gzip => Gzip::compress(output, fill),
        Compression::Snappy => Snappy::compress(output, fill),
        Compression::Lz4 => Lz4::compress(output, fill),
        Compression::Zstd => Zstd::compress(output, fill),
    };
    result.map_err(|error| Error::InvalidBatch(format!("cannot compress with {codec:?}: {error}")))
}

/// `batch` (a whole, valid v2 batch) with its records section compressed
/// with `target` instead of its current codec; the batch itself when it
/// already uses `target`. Every header field but `batchLength`, the codec
/// bits of `attributes` and the CRC is kept, so offsets, timestamps and
/// producer sequences are unaffected.
///
/// # Errors
/// [`Error::InvalidBatch`] if the header does not parse, the records section
/// does not decompress, or the result is too large for a batch.
pub fn recompress(batch: Bytes, target: Compression) -> Result<Bytes> {
    let header = BatchHeader::parse(&batch)?;
    let current = header.compression()?;
    if current == target {
        return Ok(batch);
    }
    let raw = decompress(
        current,
        batch.slice(BATCH_HEADER_BYTES..header.total_bytes()),
    )?;
    let mut output = BytesMut::with_capacity(BATCH_HEADER_BYTES + raw.len());
    output.put_slice(&batch[..BATCH_HEADER_BYTES]);
    compress(target, &raw, &mut output)?;
    let batch_length = i32::try_from(output.len() - LOG_OVERHEAD_BYTES)
        .map_err(|_| Error::InvalidBatch("recompressed batch too large".to_owned()))?;
    output[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !0b111) | codec_bits(target);
    output[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&output);
    output[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(output.freeze())
}
