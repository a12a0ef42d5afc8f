//! Variable-length integers as Kafka's record format (RecordBatch v2) writes them.
//!
//! Seven payload bits per byte, least significant group first, the high bit of each byte
//! set when another byte follows (the protobuf / Kafka `ByteUtils` encoding). Signed values
//! are zig-zag mapped first so small negative numbers stay short: `0 -> 0, -1 -> 1, 1 -> 2,
//! -2 -> 3, …`.
//!
//! | kind              | Rust type | bytes at most            |
//! |-------------------|-----------|--------------------------|
//! | varint            | `i32`     | [`VARINT_BYTES_MAX`]      |
//! | varlong           | `i64`     | [`VARLONG_BYTES_MAX`]     |
//! | unsigned varint   | `u32`     | [`VARINT_BYTES_MAX`]      |
//! | unsigned varlong  | `u64`     | [`VARLONG_BYTES_MAX`]     |
//!
//! Decoders accept non-minimal encodings (`0x80 0x00` is zero), as Kafka does, and refuse
//! anything that does not fit the type: a continuation bit on the last allowed byte
//! ([`VarintError::TooLong`]) or payload bits above the type's width in that byte
//! ([`VarintError::Overflow`]). Kafka itself silently drops the latter bits; refusing them
//! means a decoded value always re-encodes to a value equal to it.

use thiserror::Error;

/// The longest encoding of a 32-bit varint: ceil(32 / 7).
pub const VARINT_BYTES_MAX: usize = 5;
/// The longest encoding of a 64-bit varlong: ceil(64 / 7).
pub const VARLONG_BYTES_MAX: usize = 10;

const PAYLOAD_MASK: u8 = 0x7f;
const CONTINUATION_BIT: u8 = 0x80;
const PAYLOAD_BITS_PER_BYTE: usize = 7;

/// Why bytes are not a varint.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Error)]
pub enum VarintError {
    /// The input ended before a byte without the continuation bit.
    #[error("varint truncated: input ended after {bytes} bytes with the continuation bit set")]
    Truncated { bytes: usize },
    /// The continuation bit is still set on the last byte the type allows.
    #[error("varint too long: more than {bytes_max} bytes")]
    TooLong { bytes_max: usize },
    /// The last allowed byte carries bits beyond the type's width.
    #[error("varint overflows {bits} bits")]
    Overflow { bits: u32 },
}

impl VarintError {
    /// A stable short name, used as a counter label.
    pub fn reason(&self) -> &'static str {
        match self {
            VarintError::Truncated { .. } => "varint_truncated",
            VarintError::TooLong { .. } => "varint_too_long",
            VarintError::Overflow { .. } => "varint_overflow",
        }
    }
}

/// Zig-zag maps a signed 32-bit value onto an unsigned one (`-1 -> 1`, `1 -> 2`).
pub fn zigzag_encode_32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

/// Inverse of [`zigzag_encode_32`].
pub fn zigzag_decode_32(value: u32) -> i32 {
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

/// Zig-zag maps a signed 64-bit value onto an unsigned one.
pub fn zigzag_encode_64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag_encode_64`].
pub fn zigzag_decode_64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Bytes the unsigned varint encoding of `value` takes (1..=5).
pub fn unsigned_varint_len(value: u32) -> usize {
    unsigned_len(value as u64)
}

/// Bytes the unsigned varlong encoding of `value` takes (1..=10).
pub fn unsigned_varlong_len(value: u64) -> usize {
    unsigned_len(value)
}

/// Bytes the zig-zag varint encoding of `value` takes (1..=5).
pub fn varint_len(value: i32) -> usize {
    unsigned_len(zigzag_encode_32(value) as u64)
}

/// Bytes the zig-zag varlong encoding of `value` takes (1..=10).
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(zigzag_encode_64(value))
}

/// Appends the unsigned varint encoding of `value`; returns the bytes written.
pub fn put_unsigned_varint(value: u32, out: &mut Vec<u8>) -> usize {
    put_unsigned(value as u64, out)
}

/// Appends the unsigned varlong encoding of `value`; returns the bytes written.
pub fn put_unsigned_varlong(value: u64, out: &mut Vec<u8>) -> usize {
    put_unsigned(value, out)
}

/// Appends the zig-zag varint encoding of `value` (Kafka's `writeVarint`); returns the
/// bytes written.
pub fn put_varint(value: i32, out: &mut Vec<u8>) -> usize {
    put_unsigned(zigzag_encode_32(value) as u64, out)
}

/// Appends the zig-zag varlong encoding of `value` (Kafka's `writeVarlong`); returns the
/// bytes written.
pub fn put_varlong(value: i64, out: &mut Vec<u8>) -> usize {
    put_unsigned(zigzag_encode_64(value), out)
}

/// Writes the unsigned varint encoding of `value` at the start of `out`; returns the bytes
/// written. Panics if `out` is shorter than [`unsigned_varint_len`]`(value)`.
pub fn write_unsigned_varint(value: u32, out: &mut [u8]) -> usize {
    write_unsigned(value as u64, out)
}

/// Writes the unsigned varlong encoding of `value` at the start of `out`; returns the bytes
/// written. Panics if `out` is shorter than [`unsigned_varlong_len`]`(value)`.
pub fn write_unsigned_varlong(value: u64, out: &mut [u8]) -> usize {
    write_unsigned(value, out)
}

/// Writes the zig-zag varint encoding of `value` at the start of `out`; returns the bytes
/// written. Panics if `out` is shorter than [`varint_len`]`(value)`.
pub fn write_varint(value: i32, out: &mut [u8]) -> usize {
    write_unsigned(zigzag_encode_32(value) as u64, out)
}

/// Writes the zig-zag varlong encoding of `value` at the start of `out`; returns the bytes
/// written. Panics if `out` is shorter than [`varlong_len`]`(value)`.
pub fn write_varlong(value: i64, out: &mut [u8]) -> usize {
    write_unsigned(zigzag_encode_64(value), out)
}

/// Decodes an unsigned varint from the start of `bytes`: `(value, bytes used)`.
pub fn read_unsigned_varint(bytes: &[u8]) -> Result<(u32, usize), VarintError> {
    let (value, used) = read_unsigned(bytes, VARINT_BYTES_MAX, u32::BITS)?;
    Ok((value as u32, used))
}

/// Decodes an unsigned varlong from the start of `bytes`: `(value, bytes used)`.
pub fn read_unsigned_varlong(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    read_unsigned(bytes, VARLONG_BYTES_MAX, u64::BITS)
}

/// Decodes a zig-zag varint (Kafka's `readVarint`) from the start of `bytes`:
/// `(value, bytes used)`.
pub fn read_varint(bytes: &[u8]) -> Result<(i32, usize), VarintError> {
    let (value, used) = read_unsigned_varint(bytes)?;
    Ok((zigzag_decode_32(value), used))
}

/// Decodes a zig-zag varlong (Kafka's `readVarlong`) from the start of `bytes`:
/// `(value, bytes used)`.
pub fn read_varlong(bytes: &[u8]) -> Result<(i64, usize), VarintError> {
    let (value, used) = read_unsigned_varlong(bytes)?;
    Ok((zigzag_decode_64(value), used))
}

fn unsigned_len(value: u64) -> usize {
    let bits = (u64::BITS - value.leading_zeros()).max(1) as usize;
    bits.div_ceil(PAYLOAD_BITS_PER_BYTE)
}

fn put_unsigned(value: u64, out: &mut Vec<u8>) -> usize {
    let mut scratch = [0u8; VARLONG_BYTES_MAX];
    let written = write_unsigned(value, &mut scratch);
    out.extend_from_slice(&scratch[..written]);
    written
}

fn write_unsigned(mut value: u64, out: &mut [u8]) -> usize {
    let needed = unsigned_len(value);
    assert!(
        out.len() >= needed,
        "varint needs {needed} bytes, buffer has {}",
        out.len()
    );
    let mut written = 0;
    // Bounded: at most VARLONG_BYTES_MAX iterations, since each shifts out 7 bits of a u64.
    while value >= CONTINUATION_BIT as u64 {
        out[written] = (value as u8 & PAYLOAD_MASK) | CONTINUATION_BIT;
        value >>= PAYLOAD_BITS_PER_BYTE;
        written += 1;
    }
    out[written] = value as u8;
    written += 1;
    debug_assert_eq!(written, needed);
    written
}

fn read_unsigned(bytes: &[u8], bytes_max: usize, bits: u32) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for index in 0..bytes_max {
        let Some(&byte) = bytes.get(index) else {
            return Err(VarintError::Truncated { bytes: index });
        };
        let payload = (byte & PAYLOAD_MASK) as u64;
        let shift = (index * PAYLOAD_BITS_PER_BYTE) as u32;
        if index + 1 == bytes_max {
            if byte & CONTINUATION_BIT != 0 {
                return Err(VarintError::TooLong { bytes_max });
            }
            let bits_left = bits - shift;
            if payload >> bits_left != 0 {
                return Err(VarintError::Overflow { bits });
            }
        }
        value |= payload << shift;
        if byte & CONTINUATION_BIT == 0 {
            return Ok((value, index + 1));
        }
    }
    unreachable!("the last allowed byte either ends the varint or is refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    const I32_EDGES: [i32; 15] = [
        0,
        -1,
        1,
        -2,
        2,
        63,
        -64,
        64,
        -65,
        8191,
        -8192,
        i32::MAX,
        i32::MIN,
        i32::MAX - 1,
        i32::MIN + 1,
    ];

    const I64_EDGES: [i64; 15] = [
        0,
        -1,
        1,
        63,
        -64,
        64,
        -65,
        i32::MAX as i64,
        i32::MIN as i64,
        i32::MAX as i64 + 1,
        i32::MIN as i64 - 1,
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MIN + 1,
    ];

    #[test]
    fn zigzag_matches_kafka_table() {
        // The mapping Kafka's documentation (and protobuf's) lists.
        let table: [(i32, u32); 7] = [
            (0, 0),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (2, 4),
            (i32::MAX, u32::MAX - 1),
            (i32::MIN, u32::MAX),
        ];
        for (signed, unsigned) in table {
            assert_eq!(zigzag_encode_32(signed), unsigned);
            assert_eq!(zigzag_decode_32(unsigned), signed);
            assert_eq!(zigzag_encode_64(signed as i64), unsigned as u64);
            assert_eq!(zigzag_decode_64(unsigned as u64), signed as i64);
        }
        assert_eq!(zigzag_encode_64(i64::MAX), u64::MAX - 1);
        assert_eq!(zigzag_encode_64(i64::MIN), u64::MAX);
    }

    #[test]
    fn known_encodings() {
        let cases: [(i32, &[u8]); 9] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (150, &[0xac, 0x02]),
            (300, &[0xd8, 0x04]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            assert_eq!(put_varint(value, &mut out), bytes.len(), "{value}");
            assert_eq!(out, bytes, "{value}");
            assert_eq!(read_varint(bytes), Ok((value, bytes.len())));
            assert_eq!(varint_len(value), bytes.len());
        }
        let mut out = Vec::new();
        put_varlong(i64::MIN, &mut out);
        assert_eq!(
            out,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        out.clear();
        put_varlong(i64::MAX, &mut out);
        assert_eq!(
            out,
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        out.clear();
        put_unsigned_varint(u32::MAX, &mut out);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0x0f]);
        out.clear();
        put_unsigned_varint(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn varint_round_trips_edges_both_encoders() {
        for value in I32_EDGES {
            let mut vec = Vec::new();
            let written = put_varint(value, &mut vec);
            assert_eq!(written, vec.len());
            assert_eq!(written, varint_len(value));
            assert!(written <= VARINT_BYTES_MAX);
            let mut slice = [0xaau8; VARINT_BYTES_MAX + 3];
            assert_eq!(write_varint(value, &mut slice), written);
            assert_eq!(&slice[..written], &vec[..]);
            assert!(
                slice[written..].iter().all(|&b| b == 0xaa),
                "wrote past its length"
            );
            // Trailing bytes are not consumed.
            assert_eq!(read_varint(&slice), Ok((value, written)));
            assert_eq!(read_varint(&vec), Ok((value, written)));
        }
    }

    #[test]
    fn varlong_round_trips_edges_both_encoders() {
        for value in I64_EDGES {
            let mut vec = Vec::new();
            let written = put_varlong(value, &mut vec);
            assert_eq!(written, varlong_len(value));
            assert!(written <= VARLONG_BYTES_MAX);
            let mut slice = [0u8; VARLONG_BYTES_MAX];
            assert_eq!(write_varlong(value, &mut slice), written);
            assert_eq!(&slice[..written], &vec[..]);
            assert_eq!(read_varlong(&vec), Ok((value, written)));
        }
        assert_eq!(varlong_len(i64::MIN), VARLONG_BYTES_MAX);
        assert_eq!(varlong_len(0), 1);
    }

    #[test]
    fn unsigned_round_trips() {
        for value in [0u32, 1, 127, 128, 16383, 16384, u32::MAX - 1, u32::MAX] {
            let mut vec = Vec::new();
            let written = put_unsigned_varint(value, &mut vec);
            assert_eq!(written, unsigned_varint_len(value));
            let mut slice = [0u8; VARINT_BYTES_MAX];
            assert_eq!(write_unsigned_varint(value, &mut slice), written);
            assert_eq!(read_unsigned_varint(&vec), Ok((value, written)));
        }
        for value in [
            0u64,
            1,
            127,
            128,
            u32::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut vec = Vec::new();
            let written = put_unsigned_varlong(value, &mut vec);
            assert_eq!(written, unsigned_varlong_len(value));
            let mut slice = [0u8; VARLONG_BYTES_MAX];
            assert_eq!(write_unsigned_varlong(value, &mut slice), written);
            assert_eq!(read_unsigned_varlong(&vec), Ok((value, written)));
        }
    }

    #[test]
    fn every_length_boundary_round_trips() {
        for shift in 0..64u32 {
            for delta in [-1i64, 0, 1] {
                let value = (1i64 << shift).wrapping_add(delta);
                let mut vec = Vec::new();
                put_varlong(value, &mut vec);
                assert_eq!(read_varlong(&vec), Ok((value, vec.len())));
                let mut vec = Vec::new();
                put_varlong(value.wrapping_neg(), &mut vec);
                assert_eq!(read_varlong(&vec), Ok((value.wrapping_neg(), vec.len())));
                if let Ok(small) = i32::try_from(value) {
                    let mut vec = Vec::new();
                    put_varint(small, &mut vec);
                    assert_eq!(read_varint(&vec), Ok((small, vec.len())));
                }
            }
        }
    }

    #[test]
    fn truncated_input_is_refused_at_every_length() {
        let mut bytes = Vec::new();
        put_varlong(i64::MIN, &mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(
                read_varlong(&bytes[..cut]),
                Err(VarintError::Truncated { bytes: cut })
            );
        }
        let mut bytes = Vec::new();
        put_varint(i32::MIN, &mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(
                read_varint(&bytes[..cut]),
                Err(VarintError::Truncated { bytes: cut })
            );
            assert_eq!(
                read_unsigned_varint(&bytes[..cut]),
                Err(VarintError::Truncated { bytes: cut })
            );
        }
        assert_eq!(read_varint(&[]), Err(VarintError::Truncated { bytes: 0 }));
    }

    #[test]
    fn overlong_input_is_refused() {
        let six = [0x80u8, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            read_varint(&six),
            Err(VarintError::TooLong {
                bytes_max: VARINT_BYTES_MAX
            })
        );
        assert_eq!(
            read_unsigned_varint(&six).unwrap_err().reason(),
            "varint_too_long"
        );
        let eleven = [0xffu8; 11];
        assert_eq!(
            read_varlong(&eleven),
            Err(VarintError::TooLong {
                bytes_max: VARLONG_BYTES_MAX
            })
        );
        // Bits above 32 in the fifth byte.
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Overflow { bits: 32 })
        );
        // Bits above 64 in the tenth byte.
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        assert_eq!(read_varlong(&over), Err(VarintError::Overflow { bits: 64 }));
        assert_eq!(read_varlong(&over).unwrap_err().reason(), "varint_overflow");
    }

    #[test]
    fn non_minimal_encodings_are_accepted_like_kafka() {
        assert_eq!(read_varint(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(read_varint(&[0x81, 0x80, 0x80, 0x80, 0x00]), Ok((-1, 5)));
        assert_eq!(read_varlong(&[0x82, 0x80, 0x00]), Ok((1, 3)));
    }

    #[test]
    #[should_panic(expected = "varint needs")]
    fn write_into_short_buffer_panics() {
        let mut out = [0u8; 4];
        write_varint(i32::MIN, &mut out);
    }

    #[test]
    fn error_messages_and_reasons() {
        let truncated = VarintError::Truncated { bytes: 3 };
        assert_eq!(truncated.reason(), "varint_truncated");
        assert!(truncated.to_string().contains("3 bytes"));
        assert!(VarintError::Overflow { bits: 32 }
            .to_string()
            .contains("32"));
    }
}
