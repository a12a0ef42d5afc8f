//! The codecs a RecordBatch's attributes may name (bits 0-2), encoded exactly as Kafka
//! clients write them, so a batch compressed here is read by any Kafka consumer and a batch
//! from any Kafka producer is read here.
//!
//! | codec  | id | wire format                                                              |
//! |--------|----|--------------------------------------------------------------------------|
//! | none   | 0  | the records as they are                                                  |
//! | gzip   | 1  | a gzip stream (RFC 1952); several concatenated members are read          |
//! | snappy | 2  | read: xerial (snappy-java) framing or raw snappy; written: xerial framing |
//! | lz4    | 3  | the standard LZ4 frame format, independent 64 KiB blocks, no checksums   |
//! | zstd   | 4  | a standard Zstandard frame                                                |
//!
//! Snappy is the one codec where clients disagree. The Java client wraps snappy blocks in
//! snappy-java's "xerial" stream: a 16-byte header (`0x82 "SNAPPY" 0x00`, version 1,
//! compatible version 1, each a big-endian i32) then blocks of `length i32 (big-endian) |
//! raw snappy block`. librdkafka writes raw (unframed) snappy. Every consumer copes with
//! both: the Java broker and client read through snappy-java's `SnappyInputStream`, which
//! falls back to raw snappy when the magic is absent, and librdkafka looks for the xerial
//! magic before it decodes. We *write* the xerial framing, in 32 KiB blocks as snappy-java
//! does, because it is what the reference (Java) producer sends and therefore what every
//! Kafka consumer has been tested against. We *read* both, telling them apart by the magic.
//!
//! Decompression is bounded ([`DECOMPRESSED_BYTES_MAX`], or a caller's limit) so a small
//! malicious batch cannot expand into gigabytes.

use std::io::{Read, Write};

use thiserror::Error;

/// The largest output [`decompress`] produces before refusing the input. Kafka's default
/// `message.max.bytes` is 1 MiB; this leaves ample room for well-compressed batches.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// snappy-java's stream magic, the first 8 bytes of a xerial-framed snappy stream.
pub const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0x00];
/// The xerial header: magic, version (i32), minimum compatible version (i32).
pub const XERIAL_HEADER_BYTES: usize = 16;
/// The version and compatible version snappy-java writes (and librdkafka expects).
const XERIAL_VERSION: i32 = 1;
/// Uncompressed bytes per xerial block, snappy-java's default block size.
pub const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// Each xerial block starts with its compressed length, a big-endian i32.
const XERIAL_BLOCK_LENGTH_BYTES: usize = 4;

/// Mask of the compression codec in a batch's `attributes`.
pub const ATTRIBUTES_COMPRESSION_MASK: i16 = 0x07;

/// A record batch compression codec, numbered as in Kafka's attribute bits 0-2.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec with Kafka id `id` (0..=4), if any.
    pub fn from_id(id: u8) -> Option<Compression> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// The codec named by bits 0-2 of a batch's `attributes`; `None` for ids 5-7, which
    /// Kafka does not define.
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        Compression::from_id((attributes & ATTRIBUTES_COMPRESSION_MASK) as u8)
    }

    /// Kafka's id of the codec, as stored in the attributes.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The codec's bits of a batch's `attributes`.
    pub fn attribute_bits(self) -> i16 {
        self as i16
    }

    /// Parses Kafka's `compression.type` names ("none", "gzip", "snappy", "lz4", "zstd"),
    /// ignoring ASCII case. "uncompressed" is taken for none.
    pub fn parse(name: &str) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|codec| codec.name().eq_ignore_ascii_case(name))
            .or_else(|| {
                name.eq_ignore_ascii_case("uncompressed")
                    .then_some(Compression::None)
            })
    }

    /// Kafka's `compression.type` name of the codec.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a codec could not compress or decompress.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CompressionError {
    /// The codec's encoder failed (it does not on in-memory input; kept for honesty).
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: Compression, reason: String },
    /// The input is not a valid stream of the codec.
    #[error("{codec} decompression failed: {reason}")]
    Decompress { codec: Compression, reason: String },
    /// The output would exceed the allowed number of bytes.
    #[error("{codec} output exceeds {limit_bytes} bytes")]
    TooLarge {
        codec: Compression,
        limit_bytes: usize,
    },
}

impl CompressionError {
    /// A stable short name, used as a counter label.
    pub fn reason(&self) -> &'static str {
        match self {
            CompressionError::Compress { .. } => "compress_failed",
            CompressionError::Decompress { .. } => "decompress_failed",
            CompressionError::TooLarge { .. } => "decompressed_too_large",
        }
    }
}

/// Compresses `input` with `codec` in the wire format Kafka clients expect (see the module
/// documentation). `Compression::None` returns a copy.
pub fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let failed = |error: &dyn std::fmt::Display| CompressionError::Compress {
        codec,
        reason: error.to_string(),
    };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(input.len() / 2 + 64),
                flate2::Compression::default(),
            );
            encoder.write_all(input).map_err(|e| failed(&e))?;
            encoder.finish().map_err(|e| failed(&e))
        }
        Compression::Snappy => xerial_compress(input).map_err(|e| failed(&e)),
        Compression::Lz4 => {
            // Kafka's Lz4BlockInputStream refuses dependent blocks and needs no checksums;
            // these are also what its own output stream writes.
            let mut info = lz4_flex::frame::FrameInfo::new();
            info.block_size = lz4_flex::frame::BlockSize::Max64KB;
            info.block_mode = lz4_flex::frame::BlockMode::Independent;
            info.block_checksums = false;
            info.content_checksum = false;
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(
                info,
                Vec::with_capacity(input.len() / 2 + 64),
            );
            encoder.write_all(input).map_err(|e| failed(&e))?;
            encoder.finish().map_err(|e| failed(&e))
        }
        Compression::Zstd => {
            zstd::bulk::compress(input, zstd::DEFAULT_COMPRESSION_LEVEL).map_err(|e| failed(&e))
        }
    }
}

/// Decompresses `input` written by any Kafka client with `codec`, refusing output larger
/// than [`DECOMPRESSED_BYTES_MAX`].
pub fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, CompressionError> {
    decompress_bounded(codec, input, DECOMPRESSED_BYTES_MAX)
}

/// Decompresses `input` with `codec`, refusing output larger than `limit_bytes`.
pub fn decompress_bounded(
    codec: Compression,
    input: &[u8],
    limit_bytes: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => {
            if input.len() > limit_bytes {
                return Err(CompressionError::TooLarge { codec, limit_bytes });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(
            codec,
            flate2::read::MultiGzDecoder::new(input),
            input.len(),
            limit_bytes,
        ),
        Compression::Snappy => {
            if input.starts_with(&XERIAL_MAGIC) {
                xerial_decompress(input, limit_bytes)
            } else {
                snappy_raw_decompress(input, limit_bytes)
            }
        }
        Compression::Lz4 => {
            // lz4_flex accepts a frame whose end mark is missing; Kafka's reader does not,
            // and neither do we.
            check_lz4_frames(input).map_err(|reason| CompressionError::Decompress {
                codec,
                reason: reason.to_string(),
            })?;
            read_bounded(
                codec,
                lz4_flex::frame::FrameDecoder::new(input),
                input.len(),
                limit_bytes,
            )
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(|e| {
                CompressionError::Decompress {
                    codec,
                    reason: e.to_string(),
                }
            })?;
            read_bounded(codec, decoder, input.len(), limit_bytes)
        }
    }
}

/// Reads `reader` to its end, or fails once it yields more than `limit_bytes`.
fn read_bounded<R: Read>(
    codec: Compression,
    reader: R,
    input_bytes: usize,
    limit_bytes: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::with_capacity(input_bytes.saturating_mul(4).min(limit_bytes));
    let limit = (limit_bytes as u64).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| CompressionError::Decompress {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > limit_bytes {
        return Err(CompressionError::TooLarge { codec, limit_bytes });
    }
    Ok(out)
}

/// LZ4 frame magic number, little-endian on the wire.
const LZ4_FRAME_MAGIC: u32 = 0x184D_2204;
const LZ4_FLG_BLOCK_CHECKSUM: u8 = 0x10;
const LZ4_FLG_CONTENT_SIZE: u8 = 0x08;
const LZ4_FLG_CONTENT_CHECKSUM: u8 = 0x04;
const LZ4_FLG_DICTIONARY_ID: u8 = 0x01;
const LZ4_BLOCK_UNCOMPRESSED_BIT: u32 = 0x8000_0000;
const LZ4_CHECKSUM_BYTES: usize = 4;

/// Walks the LZ4 frames of `input` without decompressing: every frame must be whole, from
/// its magic to its end mark (and content checksum when flagged), and the frames must
/// cover `input` exactly. The block contents are left to the decoder.
fn check_lz4_frames(input: &[u8]) -> Result<(), &'static str> {
    let mut rest = input;
    let take = |rest: &mut &[u8], count: usize| -> Result<(), &'static str> {
        if rest.len() < count {
            return Err("lz4 frame truncated");
        }
        *rest = &rest[count..];
        Ok(())
    };
    if rest.is_empty() {
        return Err("lz4 input is empty");
    }
    // Bounded: every pass consumes at least a frame header and an end mark.
    while !rest.is_empty() {
        if rest.len() < 6 {
            return Err("lz4 frame header truncated");
        }
        if u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) != LZ4_FRAME_MAGIC {
            return Err("lz4 frame magic missing");
        }
        let flg = rest[4];
        let mut descriptor_bytes = 2 + 1; // FLG, BD, header checksum
        if flg & LZ4_FLG_CONTENT_SIZE != 0 {
            descriptor_bytes += 8;
        }
        if flg & LZ4_FLG_DICTIONARY_ID != 0 {
            descriptor_bytes += 4;
        }
        take(&mut rest, 4 + descriptor_bytes)?;
        // Bounded: every pass consumes at least the 4-byte block size.
        loop {
            if rest.len() < 4 {
                return Err("lz4 block size truncated");
            }
            let size = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            take(&mut rest, 4)?;
            if size == 0 {
                break; // end mark
            }
            let data_bytes = (size & !LZ4_BLOCK_UNCOMPRESSED_BIT) as usize;
            take(&mut rest, data_bytes)?;
            if flg & LZ4_FLG_BLOCK_CHECKSUM != 0 {
                take(&mut rest, LZ4_CHECKSUM_BYTES)?;
            }
        }
        if flg & LZ4_FLG_CONTENT_CHECKSUM != 0 {
            take(&mut rest, LZ4_CHECKSUM_BYTES)?;
        }
    }
    Ok(())
}

fn xerial_compress(input: &[u8]) -> Result<Vec<u8>, snap::Error> {
    let blocks = input.len().div_ceil(XERIAL_BLOCK_BYTES);
    let mut out = Vec::with_capacity(
        XERIAL_HEADER_BYTES
            + blocks
                * (XERIAL_BLOCK_LENGTH_BYTES + snap::raw::max_compress_len(XERIAL_BLOCK_BYTES)),
    );
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for block in input.chunks(XERIAL_BLOCK_BYTES) {
        let length_at = out.len();
        out.extend_from_slice(&[0; XERIAL_BLOCK_LENGTH_BYTES]);
        let data_at = out.len();
        out.resize(data_at + snap::raw::max_compress_len(block.len()), 0);
        let written = encoder.compress(block, &mut out[data_at..])?;
        out.truncate(data_at + written);
        let written = i32::try_from(written).expect("a 32 KiB block compresses under 2 GiB");
        out[length_at..data_at].copy_from_slice(&written.to_be_bytes());
    }
    Ok(out)
}

fn xerial_decompress(input: &[u8], limit_bytes: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Compression::Snappy;
    let malformed = |reason: &str| CompressionError::Decompress {
        codec,
        reason: reason.to_string(),
    };
    if input.len() < XERIAL_HEADER_BYTES {
        return Err(malformed("xerial header truncated"));
    }
    // The version fields are informational: snappy-java and librdkafka do not refuse a
    // stream for them, and neither do we.
    let mut rest = &input[XERIAL_HEADER_BYTES..];
    let mut out = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    // Bounded: every pass consumes at least the 4-byte block length.
    while !rest.is_empty() {
        if rest.len() < XERIAL_BLOCK_LENGTH_BYTES {
            return Err(malformed("xerial block length truncated"));
        }
        let length = i32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        rest = &rest[XERIAL_BLOCK_LENGTH_BYTES..];
        let Ok(length) = usize::try_from(length) else {
            return Err(malformed("xerial block length is negative"));
        };
        if length > rest.len() {
            return Err(malformed("xerial block truncated"));
        }
        let (block, tail) = rest.split_at(length);
        rest = tail;
        let block_bytes =
            snap::raw::decompress_len(block).map_err(|e| malformed(&e.to_string()))?;
        if out.len() + block_bytes > limit_bytes {
            return Err(CompressionError::TooLarge { codec, limit_bytes });
        }
        let at = out.len();
        out.resize(at + block_bytes, 0);
        decoder
            .decompress(block, &mut out[at..])
            .map_err(|e| malformed(&e.to_string()))?;
    }
    Ok(out)
}

fn snappy_raw_decompress(input: &[u8], limit_bytes: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Compression::Snappy;
    let failed = |e: snap::Error| CompressionError::Decompress {
        codec,
        reason: e.to_string(),
    };
    let bytes = snap::raw::decompress_len(input).map_err(failed)?;
    if bytes > limit_bytes {
        return Err(CompressionError::TooLarge { codec, limit_bytes });
    }
    let mut out = vec![0; bytes];
    let written = snap::raw::Decoder::new()
        .decompress(input, &mut out)
        .map_err(failed)?;
    out.truncate(written);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bytes: usize) -> Vec<u8> {
        // Compressible but not trivial: a repeating text with a counter in it.
        let mut out = Vec::with_capacity(bytes);
        let mut i = 0u32;
        while out.len() < bytes {
            out.extend_from_slice(format!("record {i} of the sample payload; ").as_bytes());
            i += 1;
        }
        out.truncate(bytes);
        out
    }

    fn noise(bytes: usize) -> Vec<u8> {
        // xorshift: incompressible, deterministic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn ids_names_and_attributes() {
        for (id, codec) in Compression::ALL.into_iter().enumerate() {
            assert_eq!(codec.id() as usize, id);
            assert_eq!(Compression::from_id(id as u8), Some(codec));
            assert_eq!(Compression::parse(codec.name()), Some(codec));
            assert_eq!(
                Compression::parse(&codec.name().to_uppercase()),
                Some(codec)
            );
            assert_eq!(codec.to_string(), codec.name());
            // Other attribute bits do not disturb the codec bits.
            let attributes = codec.attribute_bits() | 0x08 | 0x10 | 0x20 | 0x40;
            assert_eq!(Compression::from_attributes(attributes), Some(codec));
        }
        for id in 5..=7u8 {
            assert_eq!(Compression::from_id(id), None);
            assert_eq!(Compression::from_attributes(id as i16), None);
        }
        assert_eq!(Compression::from_id(255), None);
        assert_eq!(Compression::parse("uncompressed"), Some(Compression::None));
        assert_eq!(Compression::parse("brotli"), None);
        assert_eq!(Compression::parse(""), None);
        assert_eq!(Compression::default(), Compression::None);
    }

    #[test]
    fn every_codec_round_trips_at_many_sizes() {
        for codec in Compression::ALL {
            for bytes in [
                0,
                1,
                7,
                100,
                4096,
                XERIAL_BLOCK_BYTES,
                XERIAL_BLOCK_BYTES + 1,
                200_000,
            ] {
                for input in [sample(bytes), noise(bytes)] {
                    let compressed = compress(codec, &input).unwrap();
                    let output = decompress(codec, &compressed).unwrap();
                    assert_eq!(output, input, "{codec} at {bytes} bytes");
                }
            }
            let big = sample(200_000);
            if codec != Compression::None {
                assert!(
                    compress(codec, &big).unwrap().len() < big.len() / 2,
                    "{codec}"
                );
            }
        }
    }

    #[test]
    fn gzip_writes_a_gzip_stream_and_reads_concatenated_members() {
        let compressed = compress(Compression::Gzip, b"hello").unwrap();
        assert_eq!(&compressed[..2], &[0x1f, 0x8b]);
        let mut two = compressed.clone();
        two.extend_from_slice(&compress(Compression::Gzip, b" world").unwrap());
        assert_eq!(decompress(Compression::Gzip, &two).unwrap(), b"hello world");
    }

    #[test]
    fn lz4_writes_the_standard_frame_kafka_reads() {
        let compressed = compress(Compression::Lz4, &sample(1000)).unwrap();
        // LZ4 frame magic, little-endian 0x184D2204.
        assert_eq!(&compressed[..4], &[0x04, 0x22, 0x4d, 0x18]);
        let flg = compressed[4];
        assert_eq!(flg >> 6, 0b01, "frame version 1");
        assert_ne!(flg & 0x20, 0, "independent blocks");
        assert_eq!(flg & 0x10, 0, "no block checksum");
        assert_eq!(flg & 0x08, 0, "no content size");
        assert_eq!(flg & 0x04, 0, "no content checksum");
        assert_eq!(flg & 0x01, 0, "no dictionary id");
        assert_eq!((compressed[5] >> 4) & 0x07, 4, "64 KiB blocks");
    }

    #[test]
    fn zstd_writes_a_standard_frame() {
        let compressed = compress(Compression::Zstd, b"hello").unwrap();
        assert_eq!(&compressed[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    }

    #[test]
    fn snappy_writes_xerial_framing_in_32_kib_blocks() {
        let input = sample(XERIAL_BLOCK_BYTES * 2 + 5);
        let compressed = compress(Compression::Snappy, &input).unwrap();
        assert_eq!(&compressed[..8], &XERIAL_MAGIC);
        assert_eq!(&compressed[8..12], &1i32.to_be_bytes());
        assert_eq!(&compressed[12..16], &1i32.to_be_bytes());
        // Walk the blocks by hand: three of them, each a raw snappy block.
        let mut rest = &compressed[XERIAL_HEADER_BYTES..];
        let mut uncompressed = Vec::new();
        while !rest.is_empty() {
            let length = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let block = &rest[4..4 + length];
            uncompressed.push(snap::raw::decompress_len(block).unwrap());
            rest = &rest[4 + length..];
        }
        assert_eq!(uncompressed, [XERIAL_BLOCK_BYTES, XERIAL_BLOCK_BYTES, 5]);
    }

    #[test]
    fn snappy_reads_raw_unframed_snappy_as_librdkafka_writes_it() {
        let input = sample(70_000);
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert!(!raw.starts_with(&XERIAL_MAGIC));
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), input);
    }

    #[test]
    fn snappy_reads_xerial_with_other_versions_and_empty_blocks() {
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for part in [&b"abc"[..], b"", b"defdefdef"] {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(block.len() as i32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(
            decompress(Compression::Snappy, &framed).unwrap(),
            b"abcdefdefdef"
        );
        // A header with no block at all is an empty stream.
        assert_eq!(
            decompress(Compression::Snappy, &framed[..XERIAL_HEADER_BYTES]).unwrap(),
            b""
        );
    }

    #[test]
    fn snappy_refuses_broken_xerial_streams() {
        let good = compress(Compression::Snappy, &sample(1000)).unwrap();
        let expect_decompress_error = |bytes: &[u8]| match decompress(Compression::Snappy, bytes) {
            Err(CompressionError::Decompress { codec, .. }) => {
                assert_eq!(codec, Compression::Snappy)
            }
            other => panic!("expected a decompress error, got {other:?}"),
        };
        // Header cut short.
        expect_decompress_error(&good[..XERIAL_MAGIC.len() + 2]);
        // Block length cut short.
        expect_decompress_error(&good[..XERIAL_HEADER_BYTES + 2]);
        // Block cut short.
        expect_decompress_error(&good[..good.len() - 1]);
        // Negative block length.
        let mut negative = good.clone();
        negative[XERIAL_HEADER_BYTES..XERIAL_HEADER_BYTES + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        expect_decompress_error(&negative);
        // Garbage block.
        let mut garbage = good[..XERIAL_HEADER_BYTES].to_vec();
        garbage.extend_from_slice(&4i32.to_be_bytes());
        garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expect_decompress_error(&garbage);
    }

    #[test]
    fn every_codec_refuses_garbage() {
        // Starts with a small snappy length so snappy fails on the data, not the size.
        let garbage = [0x05u8, 0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x01, 0x02, 0x03];
        for codec in Compression::ALL
            .into_iter()
            .filter(|&c| c != Compression::None)
        {
            match decompress(codec, &garbage) {
                Err(error @ CompressionError::Decompress { .. }) => {
                    assert_eq!(error.reason(), "decompress_failed");
                    assert!(error.to_string().contains(codec.name()));
                }
                other => panic!("{codec}: expected a decompress error, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_codec_refuses_truncated_streams() {
        let input = sample(5000);
        for codec in [
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let compressed = compress(codec, &input).unwrap();
            for cut in [1, compressed.len() / 2, compressed.len() - 1] {
                assert!(
                    decompress(codec, &compressed[..cut]).is_err(),
                    "{codec} accepted a stream cut at {cut} of {}",
                    compressed.len()
                );
            }
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let input = vec![0u8; 100_000];
        for codec in Compression::ALL {
            let compressed = compress(codec, &input).unwrap();
            assert_eq!(
                decompress_bounded(codec, &compressed, input.len()).unwrap(),
                input
            );
            let error = decompress_bounded(codec, &compressed, input.len() - 1).unwrap_err();
            assert_eq!(
                error,
                CompressionError::TooLarge {
                    codec,
                    limit_bytes: input.len() - 1
                }
            );
            assert_eq!(error.reason(), "decompressed_too_large");
        }
        // Raw snappy declares its length up front: refused before allocating.
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert!(matches!(
            decompress_bounded(Compression::Snappy, &raw, 10),
            Err(CompressionError::TooLarge { .. })
        ));
    }

    #[test]
    fn compress_error_has_a_reason() {
        let error = CompressionError::Compress {
            codec: Compression::Gzip,
            reason: "x".into(),
        };
        assert_eq!(error.reason(), "compress_failed");
        assert!(error.to_string().contains("gzip"));
    }
}
