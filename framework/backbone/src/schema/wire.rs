//! Confluent's wire format: magic byte 0, the schema id as 4 bytes big-endian, then the Avro body.

use super::SchemaId;

/// The first byte of every framed payload.
pub const MAGIC: u8 = 0;

/// The frame's length before the body.
pub const HEADER_LEN: usize = 5;

/// Why a payload is not a framed Avro record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the 5-byte header.
    #[error("payload of {0} bytes is too short for the 5-byte schema header")]
    TooShort(usize),
    /// The first byte is not 0.
    #[error("bad magic byte {0:#04x} (a Confluent-framed payload starts with 0x00)")]
    BadMagicByte(u8),
}

impl WireError {
    /// A short name for dead-letter headers: `bad-magic-byte` for both.
    pub fn kind(&self) -> &'static str {
        "bad-magic-byte"
    }
}

/// Splits a framed payload into its schema id and Avro body.
pub fn split(payload: &[u8]) -> Result<(SchemaId, &[u8]), WireError> {
    match payload {
        [MAGIC, a, b, c, d, body @ ..] => Ok((SchemaId(u32::from_be_bytes([*a, *b, *c, *d])), body)),
        [other, ..] if *other != MAGIC => Err(WireError::BadMagicByte(*other)),
        _ => Err(WireError::TooShort(payload.len())),
    }
}

/// Starts a framed payload for `id` in `out` (the body is then appended).
pub fn write_header(out: &mut Vec<u8>, id: SchemaId) {
    out.push(MAGIC);
    out.extend_from_slice(&id.0.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_say_why() {
        let mut out = Vec::new();
        write_header(&mut out, SchemaId(0x0102_0304));
        out.extend_from_slice(b"body");
        assert_eq!(out[..5], [0, 1, 2, 3, 4]);
        assert_eq!(split(&out), Ok((SchemaId(0x0102_0304), &b"body"[..])));
        assert_eq!(split(&[0, 0, 0, 7]), Err(WireError::TooShort(4)));
        assert_eq!(split(b"{\"json\":1}"), Err(WireError::BadMagicByte(b'{')));
        assert_eq!(split(&[0, 0, 0, 0, 9]), Ok((SchemaId(9), &[][..])));
    }
}
