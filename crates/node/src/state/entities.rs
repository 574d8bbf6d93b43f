//! Entity records: state, last change and lock, keyed by entity name then key.

use perdure_core::EntityId;

use super::keys::{Elem, Key};
use super::records::EntityRecord;
use super::{clear, decode_value, get, put, space};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction};

/// The key of an entity's record.
pub fn entity_key(id: &EntityId) -> Vec<u8> {
    Key::new()
        .str(space::ENTITY)
        .str(id.name())
        .str(id.key())
        .into_bytes()
}

/// Reads an entity record.
pub async fn load(
    tx: &mut dyn Transaction,
    id: &EntityId,
) -> Result<Option<EntityRecord>, StoreError> {
    get(tx, &entity_key(id)).await
}

/// Writes an entity record, or removes it when it holds neither state nor lock.
pub fn save(tx: &mut dyn Transaction, id: &EntityId, r: &EntityRecord) -> Result<(), StoreError> {
    if r.state.is_none() && r.lock.is_none() {
        clear(tx, &entity_key(id));
        return Ok(());
    }
    put(tx, &entity_key(id), r)
}

/// Removes an entity record.
pub fn remove(tx: &mut dyn Transaction, id: &EntityId) {
    clear(tx, &entity_key(id));
}

/// The key prefix a scan of `name` (all names when `None`) covers.
fn scan_prefix(name: Option<&str>, key_prefix: Option<&str>) -> Vec<u8> {
    match (name, key_prefix) {
        (Some(n), Some(k)) => Key::new().str(space::ENTITY).str(n).str_prefix(k),
        (Some(n), None) => Key::new().str(space::ENTITY).str(n),
        _ => Key::new().str(space::ENTITY),
    }
    .into_bytes()
}

/// Whether `after` (a continuation key) lies under what a scan of `name` and `key_prefix`
/// covers; any other key would silently restart the listing at its first page.
pub fn valid_after(name: Option<&str>, key_prefix: Option<&str>, after: &[u8]) -> bool {
    after.starts_with(&scan_prefix(name, key_prefix))
}

/// A page of entity records under a name (all names when `None`) and key prefix, after the
/// continuation key.
pub async fn scan(
    tx: &mut dyn Transaction,
    name: Option<&str>,
    key_prefix: Option<&str>,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, EntityId, EntityRecord)>, StoreError> {
    let mut range = KeyRange::prefix(&scan_prefix(name, key_prefix));
    if let Some(a) = after {
        let mut b = a.to_vec();
        b.push(0);
        if b > range.begin {
            range.begin = b;
        }
    }
    let rows = tx.get_range(&range, RangeOptions::limit(limit)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let bad = || StoreError::corrupt(&k, perdure_core::codec::CodecError::Empty);
        let elems = Key::decode(&k).map_err(|_| bad())?;
        let (n, key) = match (elems.get(1), elems.get(2)) {
            (Some(Elem::Str(n)), Some(Elem::Str(key))) => (n.clone(), key.clone()),
            _ => return Err(bad()),
        };
        let id = EntityId::new(n, key).map_err(|_| bad())?;
        if key_prefix.is_some_and(|p| !id.key().starts_with(p)) {
            continue;
        }
        let r = decode_value(tx, &k, &v).await?;
        out.push((k, id, r));
    }
    Ok(out)
}
