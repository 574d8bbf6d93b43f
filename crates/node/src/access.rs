//! Access control: API keys with roles, checked by the HTTP API and the gRPC service.
//!
//! A key is a secret string; the node keeps only its SHA-256 digest (the configuration file
//! holds digests; keys given by environment are hashed when read). A request presents a key
//! (`Authorization: Bearer`, `x-functions-key`, or the `code` query parameter over HTTP;
//! `authorization: Bearer` metadata over gRPC) and gets the role of the key it presented.
//! Keys are long random strings (`perdure-node key` makes them), so one unsalted SHA-256 is
//! enough: nothing can be guessed from a digest.
//!
//! ```
//! use perdure_node::access::{ApiKeys, KeyEntry, Role};
//! let keys = ApiKeys::new(vec![
//!     KeyEntry::from_secret("ci", Role::Operator, "pd_0123456789abcdef0123").unwrap(),
//! ]);
//! assert_eq!(keys.role_of("pd_0123456789abcdef0123"), Some(Role::Operator));
//! assert_eq!(keys.role_of("pd_0123456789abcdef0124"), None);
//! assert!(Role::Admin.allows(Role::Reader) && !Role::Reader.allows(Role::Operator));
//! ```

use std::fmt;

use sha2::{Digest, Sha256};

/// Shortest key accepted: shorter secrets could be guessed.
pub const MIN_KEY_CHARS: usize = 16;

/// What a key may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read: every GET route (instances, histories, entities, the cluster view).
    Reader,
    /// Read and drive instances and entities: start, raise events, terminate, suspend,
    /// resume, rewind, restart, signal, clean entity storage; gRPC workers.
    Operator,
    /// Everything, including purges and cluster operations.
    Admin,
}

impl Role {
    /// Whether a key of this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The role's name in configuration (`reader`, `operator`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role of a name, case-insensitive.
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key entry is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The secret is too short to be safe.
    #[error("an API key needs at least {MIN_KEY_CHARS} characters (perdure-node key makes one)")]
    TooShort,
    /// The secret has characters a header cannot carry.
    #[error("an API key may hold only visible ASCII characters (no spaces, commas or quotes)")]
    BadCharacters,
    /// The digest is not 64 hexadecimal digits.
    #[error("sha256 must be 64 hexadecimal digits (perdure-node key prints it)")]
    BadDigest,
}

/// One accepted key: a name (for logs), its role and the SHA-256 of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// A name for the key, shown in logs (never the secret).
    pub name: String,
    /// What the key may do.
    pub role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl KeyEntry {
    /// An entry from the secret itself (hashed here; the secret is not kept).
    pub fn from_secret(name: &str, role: Role, secret: &str) -> Result<Self, KeyError> {
        check_secret(secret)?;
        Ok(Self {
            name: name.to_string(),
            role,
            digest: digest(secret),
        })
    }

    /// An entry from the hexadecimal SHA-256 of the secret.
    pub fn from_digest(name: &str, role: Role, sha256_hex: &str) -> Result<Self, KeyError> {
        let hex = sha256_hex.trim();
        if hex.len() != 64 {
            return Err(KeyError::BadDigest);
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or(KeyError::BadDigest)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| KeyError::BadDigest)?;
        }
        Ok(Self {
            name: name.to_string(),
            role,
            digest,
        })
    }
}

/// Whether a secret is usable as a key.
pub fn check_secret(secret: &str) -> Result<(), KeyError> {
    if secret.chars().count() < MIN_KEY_CHARS {
        return Err(KeyError::TooShort);
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'"' | b'\''))
    {
        return Err(KeyError::BadCharacters);
    }
    Ok(())
}

fn digest(secret: &str) -> [u8; 32] {
    let d = Sha256::digest(secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

/// The SHA-256 of a secret in hexadecimal, as the configuration file holds it.
pub fn hash_key(secret: &str) -> String {
    digest(secret).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random key (`pd_` and 48 hexadecimal digits: 192 random bits).
pub fn new_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("pd_{hex}"))
}

/// The keys a node accepts. Empty: access control is off (every route is open).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiKeys {
    keys: Vec<KeyEntry>,
}

impl ApiKeys {
    /// These keys.
    pub fn new(keys: Vec<KeyEntry>) -> Self {
        Self { keys }
    }

    /// Whether no key is configured (access control off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The entry a presented secret matches, if any. Every entry is compared in full, in
    /// constant time, whatever matches.
    pub fn entry_of(&self, presented: &str) -> Option<&KeyEntry> {
        let d = digest(presented);
        let mut found = None;
        for k in &self.keys {
            let diff = k
                .digest
                .iter()
                .zip(d.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(k);
            }
        }
        found
    }

    /// The role of a presented secret, if it is a key.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.entry_of(presented).map(|k| k.role)
    }
}

/// The role of the key a request was let through with, put in the request's extensions by
/// the HTTP middleware and the gRPC layer when the node has keys (absent: no keys, every
/// request may do everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerRole(pub Role);

/// Whether a caller may replace an existing instance (a start over an existing id, a restart
/// under the same id): that drops the old instance's history, as a purge does, so it is the
/// admin's.
pub fn may_replace(caller: Option<CallerRole>) -> bool {
    caller.is_none_or(|CallerRole(r)| r.allows(Role::Admin))
}

/// What a request gets from access control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through, with the role of the key it presented (`None`: an open route or no
    /// keys configured).
    Allow(Option<Role>),
    /// No key presented (401).
    Missing,
    /// A key that is not one of the node's (401).
    Unknown,
    /// A key whose role is below the one needed (403).
    Forbidden {
        /// The key's role.
        has: Role,
        /// The role needed.
        needs: Role,
    },
}

impl ApiKeys {
    /// The decision for a request that needs `needs` (`None`: an open route) and presented
    /// `presented`.
    pub fn decide(&self, needs: Option<Role>, presented: Option<&str>) -> Decision {
        if self.is_empty() {
            return Decision::Allow(None);
        }
        let has = presented.and_then(|p| self.role_of(p));
        let Some(needs) = needs else {
            return Decision::Allow(has);
        };
        match (presented, has) {
            (None, _) => Decision::Missing,
            (Some(_), None) => Decision::Unknown,
            (Some(_), Some(has)) if has.allows(needs) => Decision::Allow(Some(has)),
            (Some(_), Some(has)) => Decision::Forbidden { has, needs },
        }
    }
}

impl Decision {
    /// The message a refused request gets.
    pub fn message(&self) -> String {
        match self {
            Decision::Allow(_) => String::new(),
            Decision::Missing => {
                "this route needs an API key: send it as `Authorization: Bearer <key>`, \
                 as `x-functions-key: <key>`, or as the `code` query parameter"
                    .to_string()
            }
            Decision::Unknown => "the API key presented is not one of this node's keys".to_string(),
            Decision::Forbidden { has, needs } => {
                format!("this needs the {needs} role; the API key presented has the {has} role")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let secret = "pd_abcdefabcdefabcdef";
        let from_hex = KeyEntry::from_digest("a", Role::Reader, &hash_key(secret)).unwrap();
        let from_secret = KeyEntry::from_secret("a", Role::Reader, secret).unwrap();
        assert_eq!(from_hex, from_secret);
        // The SHA-256 of "abc", a published test vector.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert_eq!(
            KeyEntry::from_secret("a", Role::Reader, "short"),
            Err(KeyError::TooShort)
        );
        assert_eq!(
            KeyEntry::from_secret("a", Role::Reader, "with a space in it!!"),
            Err(KeyError::BadCharacters)
        );
        for bad in ["", "abc", &"g".repeat(64), &"é".repeat(32)] {
            assert_eq!(
                KeyEntry::from_digest("a", Role::Reader, bad),
                Err(KeyError::BadDigest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decisions_follow_the_roles() {
        let keys = ApiKeys::new(vec![
            KeyEntry::from_secret("r", Role::Reader, "reader-key-0123456789").unwrap(),
            KeyEntry::from_secret("o", Role::Operator, "operator-key-0123456789").unwrap(),
            KeyEntry::from_secret("a", Role::Admin, "admin-key-0123456789").unwrap(),
        ]);
        assert_eq!(keys.decide(None, None), Decision::Allow(None));
        assert_eq!(
            keys.decide(None, Some("admin-key-0123456789")),
            Decision::Allow(Some(Role::Admin))
        );
        assert_eq!(keys.decide(Some(Role::Reader), None), Decision::Missing);
        assert_eq!(
            keys.decide(Some(Role::Reader), Some("nope-nope-nope-nope")),
            Decision::Unknown
        );
        assert_eq!(
            keys.decide(Some(Role::Reader), Some("reader-key-0123456789")),
            Decision::Allow(Some(Role::Reader))
        );
        assert_eq!(
            keys.decide(Some(Role::Operator), Some("reader-key-0123456789")),
            Decision::Forbidden {
                has: Role::Reader,
                needs: Role::Operator
            }
        );
        assert_eq!(
            keys.decide(Some(Role::Admin), Some("operator-key-0123456789")),
            Decision::Forbidden {
                has: Role::Operator,
                needs: Role::Admin
            }
        );
        assert_eq!(
            keys.decide(Some(Role::Admin), Some("admin-key-0123456789")),
            Decision::Allow(Some(Role::Admin))
        );
        // No keys: everything is open.
        assert_eq!(
            ApiKeys::default().decide(Some(Role::Admin), None),
            Decision::Allow(None)
        );
    }

    #[test]
    fn new_keys_are_usable_and_distinct() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert!(check_secret(&a).is_ok());
        assert_eq!(a.len(), 3 + 48);
    }
}
