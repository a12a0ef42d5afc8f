//! Kafka RecordBatch v2: header parse, CRC check, decompression with a bounded output for
//! every codec (gzip, snappy raw and xerial, lz4 frames, zstd), and record decoding.
//!
//! Three shapes of input: raw bytes as a batch (the broker's view of a hostile producer);
//! raw bytes as a compressed stream of one codec with a small output limit (decompression
//! bombs, lying lengths); and a real batch built from arbitrary records with any codec,
//! then damaged (gets past the CRC into the codecs and the record decoder).
//!
//! Checked: nothing panics; no codec ever returns more than its limit; an undamaged batch
//! validates and decodes to exactly the records it was built from; a compressed stream
//! decompresses back to its input, and refuses a limit one byte short of it.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use precursor_protocol::compression::{
    compress, decompress_bounded, Compression, CompressionError,
};
use precursor_protocol::record_batch::{
    batches, records, set_base_offset, validate_batch, RecordBatchBuilder, BATCH_HEADER_BYTES,
};

/// Output limit for raw streams: small, so the bound itself is exercised.
const STREAM_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Records one built batch holds at most.
const RECORDS_PER_BATCH_MAX: usize = 16;

#[derive(Arbitrary, Debug)]
struct Record {
    timestamp_delta_ms: i16,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// Bytes as a whole batch, and as a run of batches.
    Batch(Vec<u8>),
    /// Bytes as one codec's stream, with an output limit.
    Stream {
        codec: u8,
        limit_bytes: u16,
        bytes: Vec<u8>,
    },
    /// A compressed stream of these bytes, decompressed again.
    RoundTrip { codec: u8, bytes: Vec<u8> },
    /// A real batch, then one byte of it XORed (or none).
    Built {
        codec: u8,
        base_offset: i64,
        timestamp_ms: i64,
        records: Vec<Record>,
        damage: Option<(u16, u8)>,
    },
}

fn codec(selector: u8) -> Compression {
    Compression::ALL[usize::from(selector) % Compression::ALL.len()]
}

fn check_bounded(codec: Compression, bytes: &[u8], limit_bytes: usize) {
    match decompress_bounded(codec, bytes, limit_bytes) {
        Ok(out) => assert!(
            out.len() <= limit_bytes,
            "{codec} returned {} bytes over a limit of {limit_bytes}",
            out.len()
        ),
        Err(CompressionError::TooLarge {
            codec: refused,
            limit_bytes: limit,
        }) => {
            assert_eq!(refused, codec);
            assert_eq!(limit, limit_bytes);
        }
        Err(_) => {}
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Batch(bytes) => {
            let _ = validate_batch(&bytes);
            if let Ok(decoded) = records(&bytes) {
                assert!(!decoded.is_empty(), "a valid batch holds a record");
            }
            let mut whole = 0usize;
            let mut iterator = batches(&bytes);
            for batch in iterator.by_ref() {
                let Ok((header, slice)) = batch else {
                    break;
                };
                assert_eq!(slice.len(), header.total_bytes());
                assert!(slice.len() >= BATCH_HEADER_BYTES);
                whole += slice.len();
            }
            assert_eq!(iterator.position(), whole);
            assert!(whole <= bytes.len());
        }
        Input::Stream {
            codec: selector,
            limit_bytes,
            bytes,
        } => {
            check_bounded(codec(selector), &bytes, usize::from(limit_bytes));
            check_bounded(codec(selector), &bytes, STREAM_OUTPUT_BYTES_MAX);
        }
        Input::RoundTrip {
            codec: selector,
            bytes,
        } => {
            let codec = codec(selector);
            let compressed = compress(codec, &bytes).expect("in-memory compression");
            let out = decompress_bounded(codec, &compressed, bytes.len())
                .expect("a stream we wrote decompresses");
            assert_eq!(out, bytes, "{codec} round trip");
            if !bytes.is_empty() {
                let short = decompress_bounded(codec, &compressed, bytes.len() - 1);
                assert!(
                    matches!(short, Err(CompressionError::TooLarge { .. })),
                    "{codec}: a limit one byte short must refuse, got {short:?}"
                );
            }
        }
        Input::Built {
            codec: selector,
            base_offset,
            timestamp_ms,
            records: wanted,
            damage,
        } => {
            let codec = codec(selector);
            let mut builder = RecordBatchBuilder::new(codec, -1, -1, -1, timestamp_ms);
            let wanted = &wanted[..wanted.len().min(RECORDS_PER_BATCH_MAX)];
            for record in wanted {
                let headers: Vec<(&str, &[u8])> = record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                let at = timestamp_ms.wrapping_add(i64::from(record.timestamp_delta_ms));
                match &record.value {
                    Some(value) => builder.append(at, record.key.as_deref(), value, &headers),
                    None => {
                        builder.append_tombstone(at, record.key.as_deref().unwrap_or(b""), &headers)
                    }
                }
            }
            if builder.is_empty() {
                return;
            }
            let mut batch = builder.finish();
            set_base_offset(&mut batch, base_offset);
            match damage {
                None => {
                    validate_batch(&batch).expect("an undamaged batch validates");
                    let decoded = records(&batch).expect("an undamaged batch decodes");
                    assert_eq!(decoded.len(), wanted.len());
                    for (record, want) in decoded.iter().zip(wanted) {
                        assert_eq!(record.value, want.value);
                        let key = match (&want.key, &want.value) {
                            (None, None) => Some(Vec::new()),
                            (key, _) => key.clone(),
                        };
                        assert_eq!(record.key, key);
                        assert_eq!(record.headers.len(), want.headers.len());
                    }
                }
                Some((at, with)) => {
                    let at = usize::from(at) % batch.len();
                    batch[at] ^= with;
                    // The CRC covers every byte after it: a damaged batch decodes only
                    // when the damage hit the fields before it (offset, epoch).
                    if let Ok(decoded) = records(&batch) {
                        assert_eq!(decoded.len(), wanted.len());
                    }
                }
            }
        }
    }
});
