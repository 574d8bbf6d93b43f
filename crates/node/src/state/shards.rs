//! Which shard of a shared store a key belongs to: the partition-first layout of the
//! PostgreSQL backend (docs/storage-backends.md, "Shards").
//!
//! A shard is a number derived from a key alone, so that every key of one partition (its
//! instance records, index entries, history, inbox, timers, activity tasks, entity records,
//! and the chunks of any of them) gets the same shard, and keys of different partitions get
//! different ones when the partition count divides [`SHARDS`]. A store that orders its rows
//! by `(shard, key)` then keeps each partition's rows together, so nodes that own different
//! partitions write different pages. Keys that belong to no partition (leases, membership,
//! metadata) and keys that are not tuple-encoded get [`GLOBAL`].
//!
//! The shard of an instance id or entity id is its FNV-1a hash modulo [`SHARDS`] (the same
//! hash as [`partition_of`](super::partition_of)); the shard of a partition-numbered key is
//! that number modulo [`SHARDS`]. So with `P` partitions dividing [`SHARDS`], shard `s`
//! holds only keys of partition `s % P`.

use super::space;

/// The number of shards of partitioned keys (shards `0..SHARDS`).
pub const SHARDS: u32 = 256;

/// The shard of keys that belong to no partition.
pub const GLOBAL: i32 = -1;

/// Every shard, [`GLOBAL`] first.
pub fn all() -> impl Iterator<Item = i32> {
    (GLOBAL..).take(SHARDS as usize + 1)
}

/// The shard of `key`.
pub fn shard_of(key: &[u8]) -> i32 {
    placement(key).map_or(GLOBAL, |(shard, _)| shard)
}

/// The shard of every key in `begin..end`, if they all have one: `None` means the range may
/// hold keys of several shards.
pub fn shard_of_range(begin: &[u8], end: &[u8]) -> Option<i32> {
    let (shard, len) = placement(begin)?;
    let prefix = begin.get(..len)?;
    // Every key in the range starts with `prefix` (which decides the shard) iff the range
    // ends at or before the first key past the prefix's keys.
    (end <= crate::store::prefix_end(prefix).as_slice()).then_some(shard)
}

/// The shard of `key` and the length of the key's prefix that decides it: every key with the
/// same first `len` bytes has the same shard. `None` when no prefix of `key` decides it (an
/// empty key, or one that ends inside a deciding element).
fn placement(key: &[u8]) -> Option<(i32, usize)> {
    let first = *key.first()?;
    if first != STRING {
        // Not one of this layer's keyspaces (every one starts with a string): by its first
        // byte (a foreign byte, or the tag of a non-string element, whose first element is
        // decided by the tag alone as far as this layer is concerned).
        return Some((GLOBAL, 1));
    }
    let (space_name, at) = string_elem(key, 0)?;
    let by_hash = |from: usize, parts: usize| -> Option<(i32, usize)> {
        // `parts` string elements from `from`, hashed as the routing key `@a@b` (entities)
        // or `a` (instances), up to the routing key's first NUL: an escaped NUL (`00 FF`)
        // continues a string, so a key that ends at a terminator is a prefix of keys whose
        // string goes on; hashing up to the first NUL gives those keys the same shard, and
        // a key with a NUL is decided by its bytes up to that NUL.
        let mut h = Fnv::new();
        let mut pos = from;
        for _ in 0..parts {
            if *key.get(pos)? != STRING {
                return None;
            }
            pos += 1;
            if parts > 1 {
                h.write(b"@");
            }
            loop {
                let b = *key.get(pos)?;
                pos += 1;
                if b == 0 {
                    if key.get(pos) == Some(&0xFF) {
                        return Some((h.shard(), pos + 1));
                    }
                    break;
                }
                h.write(&[b]);
            }
        }
        Some((h.shard(), pos))
    };
    match space_name.as_slice() {
        n if n == space::INSTANCE.as_bytes()
            || n == space::HISTORY.as_bytes()
            || n == space::MESSAGES_OF.as_bytes()
            || n == space::TRACE.as_bytes() =>
        {
            by_hash(at, 1)
        }
        n if n == space::BY_STATUS.as_bytes() || n == space::BY_CREATED.as_bytes() => {
            let next = skip_uint(key, at)?;
            by_hash(next, 1)
        }
        n if n == space::BY_NAME.as_bytes() => {
            let (_, next) = string_elem(key, at)?;
            by_hash(next, 1)
        }
        n if n == space::ENTITY.as_bytes() => by_hash(at, 2),
        n if n == space::INBOX.as_bytes()
            || n == space::TIMER.as_bytes()
            || n == space::TASK.as_bytes()
            || n == space::STAGED.as_bytes() =>
        {
            let p = uint_elem(key, at)?;
            let shard = i32::try_from(p % u64::from(SHARDS)).ok()?;
            Some((shard, at + 9))
        }
        n if n == space::CHUNK.as_bytes() => {
            // The chunks of a value follow the value's key: `("c", <key bytes…>, i)`.
            let rest = key.get(at..)?;
            if rest.first() == Some(&STRING)
                && let Some((inner, len)) = string_elem(rest, 0)
                && inner == b"c"
            {
                // A chunk of a chunk key is never written; keep the recursion to one level
                // (decided by the inner `"c"` element: every key that starts with both is
                // global, as is any other keyspace this layer does not know).
                return Some((GLOBAL, at + len));
            }
            let (shard, len) = placement(rest)?;
            Some((shard, at + len))
        }
        _ => Some((GLOBAL, at)),
    }
}

const STRING: u8 = 0x02;
const UINT: u8 = 0x15;

/// The unescaped string element at `at` and the position after it.
fn string_elem(key: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
    if *key.get(at)? != STRING {
        return None;
    }
    super::keys::unescape(key, at + 1)
}

fn uint_elem(key: &[u8], at: usize) -> Option<u64> {
    if *key.get(at)? != UINT {
        return None;
    }
    let raw: [u8; 8] = key.get(at + 1..at + 9)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

fn skip_uint(key: &[u8], at: usize) -> Option<usize> {
    uint_elem(key, at).map(|_| at + 9)
}

/// FNV-1a 64, as [`partition_of`](super::partition_of).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    fn shard(&self) -> i32 {
        i32::try_from(self.0 % u64::from(SHARDS)).unwrap_or(GLOBAL)
    }
}

#[cfg(test)]
mod tests {
    use perdure_core::EntityId;
    use proptest::prelude::*;

    use super::*;
    use crate::state::keys::Key;
    use crate::state::{chunk_range, partition_of};
    use crate::store::KeyRange;

    const P: u32 = 64;

    #[test]
    fn every_key_of_an_instance_is_in_the_shard_of_its_partition() {
        // (Ids with a NUL, which the engine refuses, are hashed up to the NUL.)
        for name in ["order-1", "a", "ünï", ""] {
            let p = partition_of(name, P);
            let keys = [
                Key::new().str(space::INSTANCE).str(name).into_bytes(),
                Key::new()
                    .str(space::HISTORY)
                    .str(name)
                    .uint(7)
                    .into_bytes(),
                Key::new()
                    .str(space::MESSAGES_OF)
                    .str(name)
                    .uint(1)
                    .into_bytes(),
                Key::new()
                    .str(space::BY_STATUS)
                    .uint(2)
                    .str(name)
                    .into_bytes(),
                Key::new()
                    .str(space::BY_CREATED)
                    .uint(99)
                    .str(name)
                    .into_bytes(),
                Key::new()
                    .str(space::BY_NAME)
                    .str("Hello")
                    .str(name)
                    .into_bytes(),
                Key::new()
                    .str(space::INBOX)
                    .uint(u64::from(p))
                    .uint(5)
                    .into_bytes(),
                Key::new()
                    .str(space::TASK)
                    .uint(u64::from(p))
                    .str(name)
                    .into_bytes(),
            ];
            for k in keys {
                let s = shard_of(&k);
                assert!((0..SHARDS as i32).contains(&s), "{k:?}");
                assert_eq!(s as u32 % P, p, "{k:?}");
                let chunk = Key::new().str(space::CHUNK).raw(&k).uint(0).into_bytes();
                assert_eq!(shard_of(&chunk), s);
                let r = chunk_range(&k);
                assert_eq!(shard_of_range(&r.begin, &r.end), Some(s));
            }
        }
    }

    #[test]
    fn an_entity_is_in_the_shard_of_its_partition() {
        for (name, key) in [("counter", "c1"), ("a", "b@c"), ("x", "k")] {
            let e = EntityId::new(name, key).unwrap();
            let k = crate::state::entities::entity_key(&e);
            assert_eq!(shard_of(&k) as u32 % P, partition_of(&e.to_string(), P));
        }
    }

    #[test]
    fn keys_of_no_partition_are_global() {
        for k in [
            Key::new().str(space::LEASE).uint(3).into_bytes(),
            Key::new().str(space::NODE).str("n1").into_bytes(),
            Key::new().str(space::META).str("partitions").into_bytes(),
            b"plain".to_vec(),
            vec![0x15, 1, 2],
            Vec::new(),
        ] {
            assert_eq!(shard_of(&k), GLOBAL, "{k:?}");
        }
    }

    #[test]
    fn ranges_across_partitions_have_no_shard() {
        let all = KeyRange::prefix(Key::new().str(space::INSTANCE).as_bytes());
        assert_eq!(shard_of_range(&all.begin, &all.end), None);
        let some = KeyRange::prefix(Key::new().str(space::INSTANCE).str_prefix("ord").as_bytes());
        assert_eq!(shard_of_range(&some.begin, &some.end), None);
        let status = KeyRange::prefix(Key::new().str(space::BY_STATUS).uint(1).as_bytes());
        assert_eq!(shard_of_range(&status.begin, &status.end), None);
        let leases = KeyRange::prefix(Key::new().str(space::LEASE).as_bytes());
        assert_eq!(shard_of_range(&leases.begin, &leases.end), Some(GLOBAL));
        let inbox = KeyRange::prefix(Key::new().str(space::INBOX).uint(9).as_bytes());
        assert_eq!(shard_of_range(&inbox.begin, &inbox.end), Some(9));
        let everything = KeyRange::new(Vec::new(), vec![0xFF]);
        assert_eq!(shard_of_range(&everything.begin, &everything.end), None);
    }

    #[test]
    fn a_string_that_goes_on_with_a_nul_stays_in_the_shard_of_its_prefix() {
        // `("h", "a")` is a prefix of `("h", "a\0b", 1)`: the escaped NUL continues "a".
        let prefix = Key::new().str(space::HISTORY).str("a").into_bytes();
        let range = KeyRange::prefix(&prefix);
        let s = shard_of_range(&range.begin, &range.end);
        assert!(s.is_some());
        for k in [
            Key::new()
                .str(space::HISTORY)
                .str("a\0b")
                .uint(1)
                .into_bytes(),
            [prefix.as_slice(), &[0xFF]].concat(),
        ] {
            assert!(range.contains(&k));
            assert_eq!(Some(shard_of(&k)), s, "{k:?}");
        }
        // The chunk keyspace is not claimed whole by a chunk of a chunk.
        let all_chunks = KeyRange::new(
            Key::new().str(space::CHUNK).str("c").into_bytes(),
            Key::new().str(space::CHUNK).str("i").into_bytes(),
        );
        assert_eq!(shard_of_range(&all_chunks.begin, &all_chunks.end), None);
    }

    fn elem() -> impl Strategy<Value = Key> {
        prop_oneof![
            prop::sample::select(vec![
                "i", "h", "y", "xs", "xc", "xn", "e", "q", "t", "a", "s", "c", "l", "zz"
            ])
            .prop_map(|s| Key::new().str(s)),
            "[a-c\0]{0,3}".prop_map(|s| Key::new().str(&s)),
            prop::collection::vec(
                prop::sample::select(vec![0u8, 0x01, 0x02, 0x15, 0xFF, b'a', b'c', b'h']),
                1..4
            )
            .prop_map(Key::from_bytes),
            (0u64..300).prop_map(|n| Key::new().uint(n)),
            prop::collection::vec(any::<u8>(), 0..3).prop_map(|b| Key::new().bytes(&b)),
        ]
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(elem(), 0..6).prop_map(|parts| {
            let mut k = Key::new();
            for p in parts {
                k = k.raw(p.as_bytes());
            }
            k.into_bytes()
        })
    }

    proptest! {
        /// A range that claims one shard holds only keys of that shard, for any range
        /// between two keys and any prefix range.
        #[test]
        fn a_range_with_a_shard_holds_only_keys_of_that_shard(
            a in key(), b in key(), cut in 0usize..40, inside in key()
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let prefix = lo.get(..cut.min(lo.len())).unwrap_or_default().to_vec();
            for range in [KeyRange::new(lo.clone(), hi.clone()), KeyRange::prefix(&prefix)] {
                if let Some(s) = shard_of_range(&range.begin, &range.end) {
                    for k in [&lo, &hi, &inside] {
                        if range.contains(k) {
                            prop_assert_eq!(shard_of(k), s, "{:?} in {:?}", k, range);
                        }
                    }
                    let mut extended = range.begin.clone();
                    extended.extend_from_slice(&inside);
                    if range.contains(&extended) {
                        prop_assert_eq!(shard_of(&extended), s);
                    }
                }
            }
        }
    }
}
