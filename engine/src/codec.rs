//! Record-batch compression codecs: decompressing and compressing the
//! records section of a v2 batch.
//!
//! Only the records section (after the 61-byte header) of a batch is
//! compressed. The broker recompresses produced batches for topics whose
//! `compression.type` differs from the producer's, and the log cleaner
//! decompresses batches to filter their records and recompresses what
//! survives with the batch's own codec; both use these functions, so there
//! is one place that knows the codecs.
//!
//! The formats are exactly Kafka's, as its Java client and librdkafka write
//! and read them:
//! - gzip: RFC 1952 (several members are read as one stream, as Java's
//!   `GZIPInputStream` does);
//! - Snappy: written in snappy-java's xerial framing (a 16-byte header, then
//!   32 KiB input blocks each compressed alone behind its big-endian length),
//!   as Kafka's Java producer writes it; read in that framing or as one raw
//!   Snappy block, as Kafka and librdkafka accept both;
//! - LZ4: the LZ4 frame format with a correct header checksum (KIP-57),
//!   independent 64 KiB blocks, level 4;
//! - zstd: a zstd frame, level 3.
//!
//! The writers' settings are those of the `kafka-protocol` crate fjord used
//! before, so batches compress to the same bytes as before (the tests check
//! both directions against that crate).

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

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
pub fn decompress(codec: Compression, input: Bytes) -> Result<Bytes> {
    let result = match codec {
        Compression::None => return Ok(input),
        Compression::Gzip => gzip_decompress(&input),
        Compression::Snappy => snappy::decompress(&input),
        Compression::Lz4 => lz4_decompress(&input),
        Compression::Zstd => zstd_decompress(&input),
    };
    result.map(Bytes::from).map_err(|error| {
        Error::InvalidBatch(format!("cannot decompress {codec:?} records: {error}"))
    })
}

/// Appends `raw` (an uncompressed records section) compressed with `codec`
/// to `output`.
///
/// # Errors
/// [`Error::InvalidBatch`] if the codec fails.
pub fn compress(codec: Compression, raw: &[u8], output: &mut BytesMut) -> Result<()> {
    let result = match codec {
        Compression::None => {
            output.put_slice(raw);
            return Ok(());
        }
        Compression::Gzip => gzip_compress(raw, output),
        Compression::Snappy => snappy::compress(raw, output),
        Compression::Lz4 => lz4_compress(raw, output),
        Compression::Zstd => zstd_compress(raw, output),
    };
    result.map_err(|error| Error::InvalidBatch(format!("cannot compress with {codec:?}: {error}")))
}

/// gzip's compression level: zlib's default (6), which Kafka's Java
/// producer uses too.
const GZIP_LEVEL: u32 = 6;

fn gzip_compress(raw: &[u8], output: &mut BytesMut) -> std::io::Result<()> {
    let mut encoder =
        flate2::write::GzEncoder::new(output.writer(), flate2::Compression::new(GZIP_LEVEL));
    encoder.write_all(raw)?;
    encoder.finish().map(drop)
}

fn gzip_decompress(input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(input.len() * 4);
    flate2::read::MultiGzDecoder::new(input).read_to_end(&mut raw)?;
    Ok(raw)
}

/// LZ4's compression level, as Kafka's Java producer and the
/// `kafka-protocol` crate use.
const LZ4_LEVEL: u32 = 4;

fn lz4_compress(raw: &[u8], output: &mut BytesMut) -> std::io::Result<()> {
    // liblz4 writes the frame header checksum KIP-57 requires; Kafka's
    // readers accept the block and content checksums it adds.
    let mut encoder = lz4::EncoderBuilder::new()
        .level(LZ4_LEVEL)
        .block_mode(lz4::BlockMode::Independent)
        .build(output.writer())?;
    encoder.write_all(raw)?;
    encoder.finish().1
}

fn lz4_decompress(input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(input.len() * 4);
    let mut decoder = lz4::Decoder::new(input)?;
    decoder.read_to_end(&mut raw)?;
    // A frame cut before its end mark is an error, not a shorter result.
    decoder.finish().1?;
    Ok(raw)
}

/// zstd's compression level: the library's default (3), which Kafka's Java
/// producer uses too.
const ZSTD_LEVEL: i32 = 3;

fn zstd_compress(raw: &[u8], output: &mut BytesMut) -> std::io::Result<()> {
    zstd::stream::copy_encode(raw, output.writer(), ZSTD_LEVEL)
}

fn zstd_decompress(input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(input.len() * 4);
    zstd::stream::copy_decode(input, &mut raw)?;
    Ok(raw)
}

/// Snappy as Kafka frames it: snappy-java's xerial stream format.
mod snappy {
    use std::io;

    use bytes::{BufMut, BytesMut};

    /// snappy-java's stream header: magic, version 1, compatible version 1
    /// (`SnappyCodec.java`).
    pub(super) const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

    /// The part of the header that identifies the framing; the versions
    /// after it are not checked, as librdkafka does not.
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const _: () =
        assert!(XERIAL_HEADER[0] == XERIAL_MAGIC[0] && XERIAL_HEADER[7] == XERIAL_MAGIC[7]);

    /// Input bytes per block: snappy-java's `SnappyOutputStream` default.
    pub(super) const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

    /// The most a Snappy block can expand: its densest element, a 3-byte
    /// copy, yields 64 bytes. A block declaring more than this many times
    /// its length is refused before its output is allocated.
    const EXPANSION_MAX: usize = 32;

    pub(super) fn compress(raw: &[u8], output: &mut BytesMut) -> io::Result<()> {
        output.put_slice(XERIAL_HEADER);
        let mut encoder = snap::raw::Encoder::new();
        let mut block = vec![0; snap::raw::max_compress_len(XERIAL_BLOCK_BYTES)];
        for chunk in raw.chunks(XERIAL_BLOCK_BYTES) {
            let length = encoder
                .compress(chunk, &mut block)
                .map_err(io::Error::other)?;
            // At most `max_compress_len` of 32 KiB, about 38 KiB.
            output.put_u32(length as u32);
            output.put_slice(&block[..length]);
        }
        Ok(())
    }

    pub(super) fn decompress(input: &[u8]) -> io::Result<Vec<u8>> {
        if input.len() < XERIAL_HEADER.len() || !input.starts_with(XERIAL_MAGIC) {
            // Not framed: one raw block, as some clients write it.
            let mut raw = Vec::new();
            append_block(input, &mut raw)?;
            return Ok(raw);
        }
        let mut rest = &input[XERIAL_HEADER.len()..];
        let mut raw = Vec::with_capacity(input.len() * 2);
        while !rest.is_empty() {
            if rest.starts_with(XERIAL_MAGIC) && rest.len() >= XERIAL_HEADER.len() {
                // Concatenated streams, which snappy-java reads as one. No
                // block length starts with 0x82 (blocks are below 2 GiB).
                rest = &rest[XERIAL_HEADER.len()..];
                continue;
            }
            let Some((length, after)) = rest.split_first_chunk::<4>() else {
                return Err(invalid(format!(
                    "{} bytes where a block length belongs",
                    rest.len()
                )));
            };
            let length = u32::from_be_bytes(*length) as usize;
            if after.len() < length {
                return Err(invalid(format!(
                    "block of {length} bytes, {} left in the stream",
                    after.len()
                )));
            }
            let (block, after) = after.split_at(length);
            append_block(block, &mut raw)?;
            rest = after;
        }
        Ok(raw)
    }

    /// Decompresses one raw Snappy block onto the end of `raw`.
    fn append_block(block: &[u8], raw: &mut Vec<u8>) -> io::Result<()> {
        let length = snap::raw::decompress_len(block).map_err(invalid)?;
        if length > block.len().saturating_mul(EXPANSION_MAX) {
            return Err(invalid(format!(
                "a block of {} bytes cannot hold the {length} bytes it declares",
                block.len()
            )));
        }
        let start = raw.len();
        raw.resize(start + length, 0);
        let written = snap::raw::Decoder::new()
            .decompress(block, &mut raw[start..])
            .map_err(invalid)?;
        raw.truncate(start + written);
        Ok(())
    }

    fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
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

#[cfg(test)]
mod tests {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use kafka_protocol::compression as crate_codecs;
    use kafka_protocol::compression::{Compressor, Decompressor};

    use super::*;

    const CODECS: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Records-like bytes: repetitive enough to compress, varied enough
    /// that every codec emits literals and copies. 200 KB spans several
    /// Snappy and LZ4 blocks.
    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|at| match at % 97 {
                0..=40 => b"key-value-"[at % 10],
                position => (at / 97 * 31 + position) as u8,
            })
            .collect()
    }

    const SIZES: [usize; 5] = [1, 61, 32 * 1024, 32 * 1024 + 1, 200_000];

    fn ours(codec: Compression, raw: &[u8]) -> Bytes {
        let mut output = BytesMut::new();
        compress(codec, raw, &mut output).expect("compresses");
        output.freeze()
    }

    /// What the `kafka-protocol` crate's codec writes for `raw`.
    fn theirs(codec: Compression, raw: &[u8]) -> Bytes {
        let mut output = BytesMut::new();
        let fill = |buffer: &mut BytesMut| {
            buffer.put_slice(raw);
            Ok(())
        };
        match codec {
            Compression::None => unreachable!("not a codec"),
            Compression::Gzip => crate_codecs::Gzip::compress(&mut output, fill),
            Compression::Snappy => crate_codecs::Snappy::compress(&mut output, fill),
            Compression::Lz4 => crate_codecs::Lz4::compress(&mut output, fill),
            Compression::Zstd => crate_codecs::Zstd::compress(&mut output, fill),
        }
        .expect("the crate compresses");
        output.freeze()
    }

    /// What the `kafka-protocol` crate's codec reads from `compressed`.
    fn theirs_decompressed(codec: Compression, mut compressed: Bytes) -> Bytes {
        let drain = |buffer: &mut Bytes| Ok(buffer.copy_to_bytes(buffer.remaining()));
        match codec {
            Compression::None => unreachable!("not a codec"),
            Compression::Gzip => crate_codecs::Gzip::decompress(&mut compressed, drain),
            Compression::Snappy => crate_codecs::Snappy::decompress(&mut compressed, drain),
            Compression::Lz4 => crate_codecs::Lz4::decompress(&mut compressed, drain),
            Compression::Zstd => crate_codecs::Zstd::decompress(&mut compressed, drain),
        }
        .expect("the crate decompresses")
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in CODECS {
            for len in SIZES {
                let raw = sample(len);
                let back = decompress(codec, ours(codec, &raw)).expect("decompresses");
                assert_eq!(&back[..], &raw[..], "{codec:?}, {len} bytes");
            }
        }
    }

    #[test]
    fn batches_compress_to_the_bytes_the_kafka_protocol_crate_wrote() {
        for codec in CODECS {
            for len in SIZES {
                let raw = sample(len);
                assert_eq!(
                    ours(codec, &raw),
                    theirs(codec, &raw),
                    "{codec:?}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn what_the_kafka_protocol_crate_compresses_decompresses_and_the_reverse() {
        for codec in CODECS {
            for len in SIZES {
                let raw = sample(len);
                let from_crate = decompress(codec, theirs(codec, &raw)).expect("decompresses");
                assert_eq!(&from_crate[..], &raw[..], "{codec:?}, {len} bytes");
                let by_crate = theirs_decompressed(codec, ours(codec, &raw));
                assert_eq!(&by_crate[..], &raw[..], "{codec:?}, {len} bytes");
            }
        }
    }

    /// The records section of a batch holding one record with value
    /// `sdfdsf`, snappy-compressed by Kafka's Java producer (the vector the
    /// `kafka-protocol` crate tests with).
    const KAFKA_SNAPPY: &[u8] = b"\x82\x53\x4e\x41\x50\x50\x59\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0f\x0d\x30\x18\x00\x00\x00\x01\x0csdfdsf\x00";
    /// The same records section as one raw Snappy block.
    const RAW_SNAPPY: &[u8] = b"\r0\x18\0\0\0\x01\x0csdfdsf\0";
    /// That records section uncompressed.
    const SDFDSF_RECORDS: &[u8] = b"\x18\x00\x00\x00\x01\x0csdfdsf\x00";

    #[test]
    fn snappy_reads_kafka_xerial_framing_and_raw_blocks_and_writes_xerial() {
        let framed = decompress(Compression::Snappy, Bytes::from_static(KAFKA_SNAPPY));
        assert_eq!(&framed.expect("xerial")[..], SDFDSF_RECORDS);
        let raw = decompress(Compression::Snappy, Bytes::from_static(RAW_SNAPPY));
        assert_eq!(&raw.expect("raw block")[..], SDFDSF_RECORDS);
        assert_eq!(&ours(Compression::Snappy, SDFDSF_RECORDS)[..], KAFKA_SNAPPY);

        // A raw block longer than the xerial header is not mistaken for one.
        let long = sample(5000);
        let block = snap::raw::Encoder::new()
            .compress_vec(&long)
            .expect("raw snappy");
        let back = decompress(Compression::Snappy, Bytes::from(block)).expect("raw block");
        assert_eq!(&back[..], &long[..]);
    }

    #[test]
    fn concatenated_xerial_streams_read_as_one() {
        let mut both = BytesMut::new();
        both.put_slice(KAFKA_SNAPPY);
        both.put_slice(KAFKA_SNAPPY);
        let back = decompress(Compression::Snappy, both.freeze()).expect("two streams");
        assert_eq!(&back[..], [SDFDSF_RECORDS, SDFDSF_RECORDS].concat());
    }

    #[test]
    fn a_snappy_block_declaring_more_than_it_can_hold_is_refused_before_allocating() {
        // A varint declaring 4 GiB - 1, then one literal byte.
        let bomb = Bytes::from_static(b"\xff\xff\xff\xff\x0f\x00a");
        assert!(matches!(
            decompress(Compression::Snappy, bomb),
            Err(Error::InvalidBatch(_))
        ));
    }

    /// An LZ4 frame as Kafka's Java producer writes it (`Lz4BlockOutputStream`):
    /// magic, FLG 0x60 (version 1, independent blocks, no checksums), BD
    /// 0x40 (64 KiB blocks), the header checksum KIP-57 made correct
    /// (`xxh32(FLG BD) >> 8`), one block stored uncompressed (high bit of
    /// its length set), the end mark.
    fn java_lz4_frame(content: &[u8], header_checksum: u8) -> Bytes {
        let mut frame = BytesMut::new();
        frame.put_u32_le(0x184D_2204);
        frame.put_slice(&[0x60, 0x40, header_checksum]);
        frame.put_u32_le(content.len() as u32 | 0x8000_0000);
        frame.put_slice(content);
        frame.put_u32_le(0);
        frame.freeze()
    }

    #[test]
    fn lz4_reads_java_frames_and_refuses_a_wrong_header_checksum() {
        let back = decompress(Compression::Lz4, java_lz4_frame(SDFDSF_RECORDS, 0x82));
        assert_eq!(&back.expect("Java's frame")[..], SDFDSF_RECORDS);
        // Kafka before KIP-57 checksummed the magic too; v2 batches never do.
        let broken = decompress(Compression::Lz4, java_lz4_frame(SDFDSF_RECORDS, 0x83));
        assert!(matches!(broken, Err(Error::InvalidBatch(_))));
    }

    #[test]
    fn lz4_writes_a_frame_with_independent_64_kib_blocks() {
        let frame = ours(Compression::Lz4, &sample(1000));
        assert_eq!(frame[..4], 0x184D_2204u32.to_le_bytes());
        let (flags, block_descriptor) = (frame[4], frame[5]);
        assert_eq!(flags >> 6, 0b01, "frame version 1");
        assert_ne!(flags & 0x20, 0, "independent blocks");
        assert_eq!(block_descriptor, 0x40, "64 KiB blocks");
    }

    #[test]
    fn truncated_or_garbled_input_is_an_invalid_batch_never_a_panic() {
        let raw = sample(70_000);
        for codec in CODECS {
            let compressed = ours(codec, &raw);
            for cut in [1, 7, 21, compressed.len() / 2, compressed.len() - 1] {
                let result = decompress(codec, compressed.slice(..cut));
                assert!(
                    matches!(result, Err(Error::InvalidBatch(_))),
                    "{codec:?} cut at {cut}"
                );
            }
            let mut garbled = compressed.to_vec();
            for byte in garbled.iter_mut().skip(20).step_by(3) {
                *byte ^= 0x5a;
            }
            // Garbled input either fails or yields other bytes; it must
            // not panic.
            let _ = decompress(codec, Bytes::from(garbled));
        }
    }
}
