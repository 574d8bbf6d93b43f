//! Order-preserving tuple encoding for store keys, in the style of FoundationDB's tuple layer.
//!
//! A key is a sequence of typed elements. Each element starts with a type tag, so elements of
//! different types order by tag; within a type the byte order equals the value order:
//! - bytes (`0x01`) and strings (`0x02`): the bytes with every `0x00` escaped as `0x00 0xFF`,
//!   then a `0x00` terminator, so a shorter string sorts before its extensions;
//! - signed integers (`0x14`): 8 bytes big-endian with the sign bit flipped;
//! - unsigned integers (`0x15`): 8 bytes big-endian.
//!
//! Because escaping works byte by byte, the encoding of a string *without its terminator* is a
//! prefix of the encoding of every string that starts with it: that gives prefix queries.
//!
//! ```
//! use perdure_node::state::keys::{Key, Elem};
//! let a = Key::new().str("h").str("order-1").uint(2);
//! let b = Key::new().str("h").str("order-1").uint(10);
//! assert!(a.as_bytes() < b.as_bytes());
//! assert_eq!(Key::decode(a.as_bytes()).unwrap()[2], Elem::UInt(2));
//! ```

const BYTES: u8 = 0x01;
const STRING: u8 = 0x02;
const INT: u8 = 0x14;
const UINT: u8 = 0x15;

/// One decoded key element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elem {
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A UTF-8 string.
    Str(String),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
}

/// Why bytes are not a valid tuple-encoded key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key ends inside an element.
    #[error("key ends inside an element at byte {0}")]
    Truncated(usize),
    /// An unknown type tag.
    #[error("unknown key element tag {tag:#04x} at byte {at}")]
    UnknownTag {
        /// The tag.
        tag: u8,
        /// Its position.
        at: usize,
    },
    /// A string element that is not UTF-8.
    #[error("key string element is not UTF-8")]
    NotUtf8,
    /// An element of an unexpected type.
    #[error("unexpected key element at position {0}")]
    Unexpected(usize),
}

/// A tuple-encoded key under construction.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// The empty key.
    pub fn new() -> Self {
        Self(Vec::with_capacity(48))
    }

    /// Starts from already encoded bytes (for example a stored continuation key).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    fn escaped(&mut self, tag: u8, bytes: &[u8]) {
        self.0.push(tag);
        for &b in bytes {
            self.0.push(b);
            if b == 0 {
                self.0.push(0xFF);
            }
        }
    }

    /// Appends a string element.
    pub fn str(mut self, s: &str) -> Self {
        self.escaped(STRING, s.as_bytes());
        self.0.push(0);
        self
    }

    /// Appends a byte-string element.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.escaped(BYTES, b);
        self.0.push(0);
        self
    }

    /// Appends the start of a string element without its terminator: the result is a prefix
    /// of every key whose next element is a string starting with `s`.
    pub fn str_prefix(mut self, s: &str) -> Self {
        self.escaped(STRING, s.as_bytes());
        self
    }

    /// Appends a signed integer element.
    pub fn int(mut self, v: i64) -> Self {
        self.0.push(INT);
        self.0
            .extend_from_slice(&((v as u64) ^ (1u64 << 63)).to_be_bytes());
        self
    }

    /// Appends an unsigned integer element.
    pub fn uint(mut self, v: u64) -> Self {
        self.0.push(UINT);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends raw, already encoded bytes (another key).
    pub fn raw(mut self, encoded: &[u8]) -> Self {
        self.0.extend_from_slice(encoded);
        self
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoded bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Decodes every element of an encoded key.
    pub fn decode(bytes: &[u8]) -> Result<Vec<Elem>, KeyError> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let tag = bytes[i];
            i += 1;
            match tag {
                BYTES | STRING => {
                    let (v, next) = unescape(bytes, i).ok_or(KeyError::Truncated(bytes.len()))?;
                    i = next;
                    if tag == STRING {
                        out.push(Elem::Str(
                            String::from_utf8(v).map_err(|_| KeyError::NotUtf8)?,
                        ));
                    } else {
                        out.push(Elem::Bytes(v));
                    }
                }
                INT | UINT => {
                    let raw: [u8; 8] = bytes
                        .get(i..i + 8)
                        .and_then(|s| s.try_into().ok())
                        .ok_or(KeyError::Truncated(i))?;
                    i += 8;
                    let u = u64::from_be_bytes(raw);
                    out.push(if tag == INT {
                        Elem::Int((u ^ (1u64 << 63)) as i64)
                    } else {
                        Elem::UInt(u)
                    });
                }
                other => {
                    return Err(KeyError::UnknownTag {
                        tag: other,
                        at: i - 1,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The escaped bytes of a string or bytes element whose body starts at `at`, unescaped, and
/// the position after its terminator; `None` if the key ends first.
pub(crate) fn unescape(bytes: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
    let mut v = Vec::new();
    let mut i = at;
    loop {
        let b = *bytes.get(i)?;
        i += 1;
        if b == 0 {
            if bytes.get(i) == Some(&0xFF) {
                v.push(0);
                i += 1;
            } else {
                return Some((v, i));
            }
        } else {
            v.push(b);
        }
    }
}

impl Elem {
    /// The string, or an error naming the position.
    pub fn into_str(self, pos: usize) -> Result<String, KeyError> {
        match self {
            Elem::Str(s) => Ok(s),
            _ => Err(KeyError::Unexpected(pos)),
        }
    }

    /// The unsigned integer, or an error naming the position.
    pub fn as_uint(&self, pos: usize) -> Result<u64, KeyError> {
        match self {
            Elem::UInt(v) => Ok(*v),
            _ => Err(KeyError::Unexpected(pos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(e: &Elem) -> Key {
        match e {
            Elem::Bytes(b) => Key::new().bytes(b),
            Elem::Str(s) => Key::new().str(s),
            Elem::Int(v) => Key::new().int(*v),
            Elem::UInt(v) => Key::new().uint(*v),
        }
    }

    fn elem() -> impl Strategy<Value = Elem> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Elem::Bytes),
            "[a\u{0}b\u{ff}é]{0,6}".prop_map(Elem::Str),
            any::<i64>().prop_map(Elem::Int),
            any::<u64>().prop_map(Elem::UInt),
        ]
    }

    fn rank(e: &Elem) -> u8 {
        match e {
            Elem::Bytes(_) => 0,
            Elem::Str(_) => 1,
            Elem::Int(_) => 2,
            Elem::UInt(_) => 3,
        }
    }

    fn cmp_elem(a: &Elem, b: &Elem) -> std::cmp::Ordering {
        match (a, b) {
            (Elem::Bytes(x), Elem::Bytes(y)) => x.cmp(y),
            (Elem::Str(x), Elem::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Elem::Int(x), Elem::Int(y)) => x.cmp(y),
            (Elem::UInt(x), Elem::UInt(y)) => x.cmp(y),
            _ => rank(a).cmp(&rank(b)),
        }
    }

    proptest! {
        #[test]
        fn order_is_preserved(a in proptest::collection::vec(elem(), 1..4),
                              b in proptest::collection::vec(elem(), 1..4)) {
            let ka = a.iter().fold(Key::new(), |k, e| k.raw(enc(e).as_bytes()));
            let kb = b.iter().fold(Key::new(), |k, e| k.raw(enc(e).as_bytes()));
            let expected = a.iter().zip(b.iter())
                .map(|(x, y)| cmp_elem(x, y))
                .find(|o| o.is_ne())
                .unwrap_or(a.len().cmp(&b.len()));
            prop_assert_eq!(ka.as_bytes().cmp(kb.as_bytes()), expected);
            prop_assert_eq!(Key::decode(ka.as_bytes()).unwrap(), a);
        }

        #[test]
        fn string_prefix_is_a_key_prefix(s in "[a\u{0}b]{0,6}", t in "[a\u{0}b]{0,4}") {
            let full = format!("{s}{t}");
            let k = Key::new().str("x").str(&full);
            let p = Key::new().str("x").str_prefix(&s);
            prop_assert!(k.as_bytes().starts_with(p.as_bytes()));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = Key::decode(&bytes);
        }
    }
}
