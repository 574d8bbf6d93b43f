//! Identifiers: instances, executions and entities.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which identifier.
        what: &'static str,
    },
    /// The identifier is longer than allowed.
    #[error("{what} is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// Its length in characters.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The identifier holds a character that is not allowed.
    #[error("{what} contains the character {ch:?}, which is not allowed")]
    BadChar {
        /// Which identifier.
        what: &'static str,
        /// The offending character.
        ch: char,
    },
}

/// Longest instance id, in characters.
pub const MAX_INSTANCE_ID_CHARS: usize = 256;

fn validate(what: &'static str, s: &str, max: usize, forbidden: &[char]) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    let len = s.chars().count();
    if len > max {
        return Err(IdError::TooLong { what, len, max });
    }
    if let Some(ch) = s.chars().find(|c| c.is_control() || forbidden.contains(c)) {
        return Err(IdError::BadChar { what, ch });
    }
    Ok(())
}

/// The id of an orchestration instance: 1–256 printable characters, no `/`.
///
/// ```
/// use perdure_core::InstanceId;
/// let id = InstanceId::new("order-42").unwrap();
/// assert_eq!(id.as_str(), "order-42");
/// assert!(InstanceId::new("a/b").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// Validates and wraps an instance id.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        validate("instance id", &id, MAX_INSTANCE_ID_CHARS, &['/'])?;
        Ok(Self(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id known to be valid (a literal in this crate).
    pub(crate) fn new_unchecked(id: &str) -> Self {
        Self(id.to_string())
    }
}

impl TryFrom<String> for InstanceId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<InstanceId> for String {
    fn from(value: InstanceId) -> Self {
        value.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one execution of an instance (a new one starts with every continue-as-new,
/// restart or rewind-as-new). Chosen by the runtime; opaque to the core.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExecutionId(pub String);

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a durable entity: its (case-insensitive, stored lowercase) name and its key.
///
/// ```
/// use perdure_core::EntityId;
/// let id = EntityId::new("Counter", "c1").unwrap();
/// assert_eq!(id.name(), "counter");
/// assert_eq!(id.to_string(), "@counter@c1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "EntityIdWire")]
pub struct EntityId {
    name: String,
    key: String,
}

/// The wire form of [`EntityId`]; decoding validates it like [`EntityId::new`], so an id read
/// from a client, a peer or the disk obeys the same rules as one built in code.
#[derive(Deserialize)]
#[serde(rename = "EntityId")]
struct EntityIdWire {
    name: String,
    key: String,
}

impl TryFrom<EntityIdWire> for EntityId {
    type Error = IdError;

    fn try_from(w: EntityIdWire) -> Result<Self, IdError> {
        Self::new(w.name, w.key)
    }
}

/// Longest entity name, in characters.
pub const MAX_ENTITY_NAME_CHARS: usize = 128;

impl EntityId {
    /// Validates an entity id. The name is lower-cased (entity names are case-insensitive, as
    /// in Durable Functions); it may not contain `@` or `/`. The key follows the instance id
    /// rules.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into().to_lowercase();
        let key = key.into();
        validate("entity name", &name, MAX_ENTITY_NAME_CHARS, &['@', '/'])?;
        validate("entity key", &key, MAX_INSTANCE_ID_CHARS, &['/'])?;
        Ok(Self { name, key })
    }

    /// The entity name (lower case).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entity key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Parses the Durable Functions instance form `@name@key`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s.strip_prefix('@').ok_or(IdError::BadChar {
            what: "entity instance id",
            ch: s.chars().next().unwrap_or(' '),
        })?;
        let (name, key) = rest
            .split_once('@')
            .ok_or(IdError::Empty { what: "entity key" })?;
        Self::new(name, key)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}@{}", self.name, self.key)
    }
}

/// The stable partition of an instance id or entity id string (`@name@key`, the `Display`
/// of [`EntityId`]) among `partitions`: FNV-1a 64 of its bytes, modulo the partition count.
/// Nodes place instances and entities by it; clients that know the partition table send
/// each request to its owner by it. Changing it moves every instance: it is part of the
/// storage layout.
pub fn partition_of(routing_key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in routing_key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    u32::try_from(h % u64::from(partitions.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_rules() {
        assert!(InstanceId::new("x").is_ok());
        assert!(matches!(InstanceId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(
            InstanceId::new("a/b"),
            Err(IdError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            InstanceId::new("a\nb"),
            Err(IdError::BadChar { .. })
        ));
        assert!(InstanceId::new("é".repeat(256)).is_ok());
        assert!(matches!(
            InstanceId::new("a".repeat(257)),
            Err(IdError::TooLong { len: 257, .. })
        ));
        let bad: Result<InstanceId, _> = serde_json::from_str("\"a/b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn entity_id_roundtrip() {
        let id = EntityId::new("Counter", "k@1").unwrap();
        assert_eq!(EntityId::parse(&id.to_string()).unwrap(), id);
        assert!(EntityId::new("a@b", "k").is_err());
    }

    #[test]
    fn decoding_validates_entity_ids() {
        let id = EntityId::new("Counter", "k1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#"{"name":"counter","key":"k1"}"#);
        assert_eq!(serde_json::from_str::<EntityId>(&json).unwrap(), id);
        let bytes = crate::codec::encode(&id).unwrap();
        assert_eq!(crate::codec::decode::<EntityId>(&bytes).unwrap(), id);
        for bad in [
            r#"{"name":"a@b","key":"k"}"#,
            r#"{"name":"","key":"k"}"#,
            r#"{"name":"n","key":"a/b"}"#,
        ] {
            assert!(serde_json::from_str::<EntityId>(bad).is_err(), "{bad}");
        }
        let crafted = crate::codec::encode(&("a/b", "k")).unwrap();
        assert!(crate::codec::decode::<EntityId>(&crafted).is_err());
    }
}
