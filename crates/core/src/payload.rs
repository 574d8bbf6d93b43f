//! Payloads: user data as bytes plus an encoding tag.
//!
//! Inputs, outputs, event data and entity state travel as [`Payload`]s. JSON (serde_json) is
//! the default encoding, so the HTTP API and tools can show them; the envelope around them
//! (history events, store records) is encoded by [`crate::codec`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How a payload's bytes are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// UTF-8 JSON text.
    Json,
    /// Opaque bytes, not shown by the HTTP API.
    Binary,
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The payload is not of the expected encoding.
    #[error("payload is {actual:?}, expected {expected:?}")]
    WrongEncoding {
        /// The encoding that was wanted.
        expected: Encoding,
        /// The encoding found.
        actual: Encoding,
    },
    /// The JSON does not match the declared type.
    #[error("payload does not match type {type_name}: {source}")]
    Json {
        /// The Rust type that was wanted.
        type_name: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// User data: bytes plus their encoding.
///
/// ```
/// use perdure_core::Payload;
/// let p = Payload::json(&vec![1, 2, 3]).unwrap();
/// assert_eq!(p.as_json_str(), Some("[1,2,3]"));
/// let back: Vec<i32> = p.decode().unwrap();
/// assert_eq!(back, vec![1, 2, 3]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Payload {
    /// The encoding of `data`.
    pub encoding: Encoding,
    /// The encoded bytes.
    pub data: Vec<u8>,
}

impl Payload {
    /// Encodes a value as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, PayloadError> {
        let data = serde_json::to_vec(value).map_err(|source| PayloadError::Json {
            type_name: std::any::type_name::<T>(),
            source,
        })?;
        Ok(Self {
            encoding: Encoding::Json,
            data,
        })
    }

    /// Wraps JSON text that is already encoded (it is checked to be valid JSON).
    pub fn from_json_text(text: impl Into<String>) -> Result<Self, PayloadError> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|source| {
            PayloadError::Json {
                type_name: "JSON text",
                source,
            }
        })?;
        Ok(Self {
            encoding: Encoding::Json,
            data: text.into_bytes(),
        })
    }

    /// Wraps opaque bytes.
    pub fn binary(data: Vec<u8>) -> Self {
        Self {
            encoding: Encoding::Binary,
            data,
        }
    }

    /// Decodes a JSON payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        if self.encoding != Encoding::Json {
            return Err(PayloadError::WrongEncoding {
                expected: Encoding::Json,
                actual: self.encoding,
            });
        }
        match serde_json::from_slice(&self.data) {
            Ok(value) => Ok(value),
            Err(source) => {
                // Clients such as the official Python Durable Functions client send JSON
                // encoded twice: a JSON string literal whose content is the JSON value. The
                // payload is stored as sent (as Durable Functions does); a typed reader still
                // gets its value when the string's content decodes into `T`.
                if let Ok(inner) = serde_json::from_slice::<String>(&self.data)
                    && let Ok(value) = serde_json::from_str(&inner)
                {
                    return Ok(value);
                }
                Err(PayloadError::Json {
                    type_name: std::any::type_name::<T>(),
                    source,
                })
            }
        }
    }

    /// The JSON text, if this is a JSON payload holding valid UTF-8.
    pub fn as_json_str(&self) -> Option<&str> {
        match self.encoding {
            Encoding::Json => std::str::from_utf8(&self.data).ok(),
            Encoding::Binary => None,
        }
    }

    /// Size of the encoded data in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the data is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Binary formats (the codec) carry the bytes; human-readable formats (JSON history files,
/// the CLI) show a JSON payload's text as a string, so golden histories stay readable.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Payload")]
struct BinaryForm {
    encoding: Encoding,
    data: Vec<u8>,
}

#[derive(Serialize)]
#[serde(rename = "Payload")]
struct TextForm<'a> {
    encoding: Encoding,
    data: &'a str,
}

#[derive(Deserialize)]
#[serde(rename = "Payload")]
struct ReadableForm {
    encoding: Encoding,
    data: ReadableData,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReadableData {
    Text(String),
    Bytes(Vec<u8>),
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable()
            && let Some(text) = self.as_json_str()
        {
            return TextForm {
                encoding: self.encoding,
                data: text,
            }
            .serialize(serializer);
        }
        BinaryForm {
            encoding: self.encoding,
            data: self.data.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let form = ReadableForm::deserialize(deserializer)?;
            let data = match form.data {
                ReadableData::Text(t) => t.into_bytes(),
                ReadableData::Bytes(b) => b,
            };
            Ok(Self {
                encoding: form.encoding,
                data,
            })
        } else {
            let form = BinaryForm::deserialize(deserializer)?;
            Ok(Self {
                encoding: form.encoding,
                data: form.data,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_shows_text_and_reads_both_forms() {
        let p = Payload::json(&serde_json::json!({"a": [1, 2]})).unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(text, r#"{"encoding":"Json","data":"{\"a\":[1,2]}"}"#);
        assert_eq!(serde_json::from_str::<Payload>(&text).unwrap(), p);
        let bytes = r#"{"encoding":"Binary","data":[1,2,255]}"#;
        assert_eq!(
            serde_json::from_str::<Payload>(bytes).unwrap(),
            Payload::binary(vec![1, 2, 255])
        );
        let bin = Payload::binary(vec![0, 159]);
        assert_eq!(
            serde_json::from_str::<Payload>(&serde_json::to_string(&bin).unwrap()).unwrap(),
            bin
        );
        let coded = crate::codec::encode(&p).unwrap();
        assert_eq!(crate::codec::decode::<Payload>(&coded).unwrap(), p);
    }

    #[test]
    fn double_encoded_json_still_decodes_into_typed_values() {
        // What the Python client sends for {"n": 3}: a JSON string holding JSON.
        let p = Payload::from_json_text(r#""{\"n\": 3}""#).unwrap();
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct In {
            n: i32,
        }
        assert_eq!(p.decode::<In>().unwrap(), In { n: 3 });
        // A reader that wants the string gets the string, as sent.
        assert_eq!(p.decode::<String>().unwrap(), r#"{"n": 3}"#);
        // A number sent as "5" decodes as a number too.
        assert_eq!(
            Payload::from_json_text(r#""5""#)
                .unwrap()
                .decode::<i64>()
                .unwrap(),
            5
        );
        // Garbage stays an error naming the type.
        let err = Payload::from_json_text(r#""nope""#)
            .unwrap()
            .decode::<i64>()
            .unwrap_err();
        assert!(err.to_string().contains("i64"), "{err}");
    }
}
