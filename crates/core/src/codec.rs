//! The one codec for envelopes: history events, store records and messages between nodes.
//!
//! Every encoded record is one format-version byte followed by bincode 2 (serde mode,
//! standard config). Decoding always applies a size limit and never panics. Nothing else in
//! Perdure calls bincode directly, so switching to another codec later touches only this file.
//!
//! ```
//! use perdure_core::codec;
//! let bytes = codec::encode(&("hello", 42u32)).unwrap();
//! let (s, n): (String, u32) = codec::decode(&bytes).unwrap();
//! assert_eq!((s.as_str(), n), ("hello", 42));
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The current format version, written as the first byte of every record.
pub const FORMAT_VERSION: u8 = 1;

/// The largest record [`decode`] accepts (bytes after the version byte): 16 MiB, well above
/// the store's 100 kB value limit and the 10 MB transaction limit.
pub const MAX_DECODE_BYTES: usize = 16 * 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODE_BYTES>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is empty (not even a version byte).
    #[error("empty record")]
    Empty,
    /// The record was written by a format this build does not know.
    #[error("unknown record format version {0} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// The bytes are not a valid record of the expected type.
    #[error("corrupt record: {0}")]
    Decode(#[source] bincode::error::DecodeError),
    /// The record decoded, but does not fit with what surrounds it (the reason).
    #[error("corrupt record: {0}")]
    Invalid(&'static str),
    /// Bytes were left over after the record.
    #[error("corrupt record: {0} trailing bytes")]
    TrailingBytes(usize),
    /// The value could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(#[source] bincode::error::EncodeError),
}

/// Encodes a value: version byte, then bincode.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(CodecError::Encode)?;
    Ok(out)
}

/// Decodes a value written by [`encode`], with the size limit; never panics.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, read) =
        bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(CodecError::Decode)?;
    if read != body.len() {
        return Err(CodecError::TrailingBytes(body.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_version_and_empty() {
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<u32>(&[9, 1]),
            Err(CodecError::UnknownVersion(9))
        ));
        let mut b = encode(&7u32).unwrap();
        b.push(0);
        assert!(matches!(
            decode::<u32>(&b),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_allocation() {
        // A Vec<u8> claiming u64::MAX elements.
        let bytes = [
            FORMAT_VERSION,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
