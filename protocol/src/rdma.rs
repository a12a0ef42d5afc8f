//! The RDMA transport's connection handshake: what a client puts in its rdma_cm connect
//! request's private data, what the broker answers in its accept, and why it rejects.
//! After that, native frames ([`crate::frame`]) travel one per SEND; each side pre-posts
//! receive buffers, so neither sends more frames than the other announced.
//!
//! ```text
//!  ClientHello (connect private data, 16 bytes; RoCE allows 56)
//!  0        4        6        8               12              16
//!  +--------+--------+--------+---------------+---------------+
//!  | magic  |version |  zero  | buffer_bytes  | recv_buffers  |
//!  | "PRDM" |  u16   |  u16   |     u32       |     u32       |
//!  +--------+--------+--------+---------------+---------------+
//!     buffer_bytes: the largest frame the client can receive (its receive buffers)
//!     recv_buffers: receives it keeps posted (informational)
//!
//!  ServerHello (accept private data, 16 bytes)
//!  0        4        6        8               12              16
//!  +--------+--------+--------+---------------+---------------+
//!  | magic  |version |  zero  | buffer_bytes  | recv_buffers  |
//!  | "PRDM" |  u16   |  u16   |     u32       |     u32       |
//!  +--------+--------+--------+---------------+---------------+
//!     buffer_bytes: the largest frame the broker receives and sends on this connection
//!     recv_buffers: receives the broker keeps posted: the client's requests in flight
//!
//!  Reject (reject private data): "PRDR" then a short ASCII reason.
//! ```
//!
//! Integers are little-endian. On InfiniBand/RoCE the connection manager pads private
//! data, so decoders read the fixed layout and ignore what follows.

/// "PRDM": the first four bytes of both hellos.
pub const RDMA_HELLO_MAGIC: u32 = u32::from_le_bytes(*b"PRDM");
/// "PRDR": the first four bytes of a reject's reason.
pub const RDMA_REJECT_MAGIC: u32 = u32::from_le_bytes(*b"PRDR");
/// The handshake's version.
pub const RDMA_HELLO_VERSION: u16 = 1;
/// Bytes of reason text a reject carries at most (RoCE delivers 56 bytes of private data
/// with a reject... less the magic).
pub const RDMA_REJECT_REASON_BYTES_MAX: usize = 52;

/// Why a hello does not decode.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("{bytes} bytes of private data, a hello needs {}", RdmaHello::BYTES)]
    Truncated { bytes: usize },
    #[error("not a Precursor RDMA hello (magic {found:#010x})")]
    BadMagic { found: u32 },
    #[error("RDMA handshake version {found} (this build speaks {RDMA_HELLO_VERSION})")]
    UnsupportedVersion { found: u16 },
}

/// Either side's hello: the largest frame it takes, and the receives it keeps posted.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RdmaHello {
    pub buffer_bytes: u32,
    pub recv_buffers: u32,
}

impl RdmaHello {
    pub const BYTES: usize = 16;

    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        out[0..4].copy_from_slice(&RDMA_HELLO_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&RDMA_HELLO_VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.buffer_bytes.to_le_bytes());
        out[12..16].copy_from_slice(&self.recv_buffers.to_le_bytes());
        out
    }

    /// Decodes the first [`RdmaHello::BYTES`] of `data` (padding after them is ignored).
    pub fn decode(data: &[u8]) -> Result<RdmaHello, HelloError> {
        if data.len() < Self::BYTES {
            return Err(HelloError::Truncated { bytes: data.len() });
        }
        let magic = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes"));
        if magic != RDMA_HELLO_MAGIC {
            return Err(HelloError::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes([data[4], data[5]]);
        if version != RDMA_HELLO_VERSION {
            return Err(HelloError::UnsupportedVersion { found: version });
        }
        Ok(RdmaHello {
            buffer_bytes: u32::from_le_bytes(data[8..12].try_into().expect("4 bytes")),
            recv_buffers: u32::from_le_bytes(data[12..16].try_into().expect("4 bytes")),
        })
    }
}

/// A reject's private data: the magic and `reason` (cut to fit). Returns the bytes used.
pub fn encode_reject(reason: &str, out: &mut [u8; 4 + RDMA_REJECT_REASON_BYTES_MAX]) -> usize {
    out[0..4].copy_from_slice(&RDMA_REJECT_MAGIC.to_le_bytes());
    let mut len = reason.len().min(RDMA_REJECT_REASON_BYTES_MAX);
    while !reason.is_char_boundary(len) {
        len -= 1;
    }
    out[4..4 + len].copy_from_slice(&reason.as_bytes()[..len]);
    4 + len
}

/// The reason in a reject's private data, if it is one of ours (padding NULs trimmed).
pub fn decode_reject(data: &[u8]) -> Option<&str> {
    if data.len() < 4 || data[0..4] != RDMA_REJECT_MAGIC.to_le_bytes() {
        return None;
    }
    let text = &data[4..];
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    std::str::from_utf8(&text[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_ignores_padding() {
        let hello = RdmaHello {
            buffer_bytes: 9216,
            recv_buffers: 32,
        };
        let mut padded = [0u8; 56];
        padded[..RdmaHello::BYTES].copy_from_slice(&hello.encode());
        assert_eq!(RdmaHello::decode(&padded), Ok(hello));
        assert_eq!(&hello.encode()[0..4], b"PRDM");
    }

    #[test]
    fn bad_hellos_say_why() {
        assert_eq!(
            RdmaHello::decode(&[0; 8]),
            Err(HelloError::Truncated { bytes: 8 })
        );
        let mut bytes = RdmaHello {
            buffer_bytes: 1,
            recv_buffers: 1,
        }
        .encode();
        bytes[0] = b'X';
        assert!(matches!(
            RdmaHello::decode(&bytes),
            Err(HelloError::BadMagic { .. })
        ));
        bytes[0] = b'P';
        bytes[4] = 9;
        assert_eq!(
            RdmaHello::decode(&bytes),
            Err(HelloError::UnsupportedVersion { found: 9 })
        );
        assert!(HelloError::UnsupportedVersion { found: 9 }
            .to_string()
            .contains("version 9"));
    }

    #[test]
    fn rejects_carry_a_reason() {
        let mut out = [0u8; 4 + RDMA_REJECT_REASON_BYTES_MAX];
        let len = encode_reject("connections_max (16) reached", &mut out);
        let mut padded = [0u8; 56];
        padded[..len].copy_from_slice(&out[..len]);
        assert_eq!(decode_reject(&padded), Some("connections_max (16) reached"));
        assert_eq!(decode_reject(b"nope"), None);
        let long = "x".repeat(200);
        let len = encode_reject(&long, &mut out);
        assert_eq!(len, 4 + RDMA_REJECT_REASON_BYTES_MAX);
    }
}
