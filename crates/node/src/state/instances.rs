//! Instance records and their secondary indexes (runtime status, created time, name), paged
//! queries and counts.

use std::collections::BTreeMap;

use perdure_core::management::InstanceQuery;
use perdure_core::{InstanceId, OrchestrationStatus};

use super::keys::{Elem, Key};
use super::records::InstanceRecord;
use super::{clear, decode_value, get, put, space};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction};

/// The key of an instance record.
pub fn record_key(id: &InstanceId) -> Vec<u8> {
    Key::new()
        .str(space::INSTANCE)
        .str(id.as_str())
        .into_bytes()
}

fn index_keys(r: &InstanceRecord) -> [Vec<u8>; 3] {
    let id = r.instance_id.as_str();
    [
        Key::new()
            .str(space::BY_STATUS)
            .uint(u64::from(r.status.code()))
            .str(id)
            .into_bytes(),
        Key::new()
            .str(space::BY_CREATED)
            .uint(r.created_at.as_millis())
            .str(id)
            .into_bytes(),
        Key::new()
            .str(space::BY_NAME)
            .str(&r.name)
            .str(id)
            .into_bytes(),
    ]
}

/// Reads an instance record.
pub async fn load(
    tx: &mut dyn Transaction,
    id: &InstanceId,
) -> Result<Option<InstanceRecord>, StoreError> {
    get(tx, &record_key(id)).await
}

/// Loads the records of `ids` (in that order), reading them together.
pub async fn load_many(
    tx: &mut dyn Transaction,
    ids: &[&InstanceId],
) -> Result<Vec<Option<InstanceRecord>>, StoreError> {
    let keys: Vec<Vec<u8>> = ids.iter().map(|id| record_key(id)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let raws = tx.get_many(&refs).await?;
    let mut out = Vec::with_capacity(raws.len());
    for (key, raw) in keys.iter().zip(raws) {
        out.push(match raw {
            Some(raw) => Some(decode_value(tx, key, &raw).await?),
            None => None,
        });
    }
    Ok(out)
}

/// Writes an instance record and moves its index entries; `old` is the record it replaces.
pub fn save(
    tx: &mut dyn Transaction,
    old: Option<&InstanceRecord>,
    new: &InstanceRecord,
) -> Result<(), StoreError> {
    // Only the entries that change are written: an episode that keeps the status writes
    // none (the old record's entries exist, written with it).
    let old_idx = old.map(index_keys);
    for (i, n) in index_keys(new).iter().enumerate() {
        let o = old_idx.as_ref().and_then(|o| o.get(i));
        if o == Some(n) {
            continue;
        }
        if let Some(o) = o {
            tx.clear(o);
        }
        tx.set(n, &[])?;
    }
    put(tx, &record_key(&new.instance_id), new)
}

/// Removes an instance record and its index entries.
pub fn remove(tx: &mut dyn Transaction, old: &InstanceRecord) {
    for k in index_keys(old) {
        tx.clear(&k);
    }
    clear(tx, &record_key(&old.instance_id));
    super::traces::clear(tx, &old.instance_id);
}

/// The default and largest page size.
pub const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn matches(q: &InstanceQuery, r: &InstanceRecord) -> bool {
    (q.statuses.is_empty() || q.statuses.contains(&r.status))
        && q.created_from.is_none_or(|t| r.created_at >= t)
        && q.created_to.is_none_or(|t| r.created_at <= t)
        && q.instance_id_prefix
            .as_deref()
            .is_none_or(|p| r.instance_id.as_str().starts_with(p))
        && q.name.as_deref().is_none_or(|n| r.name == n)
}

/// The index range a query scans, and the position of the instance id in its keys.
fn driving_range(q: &InstanceQuery) -> (KeyRange, usize) {
    if let Some(p) = &q.instance_id_prefix {
        let pre = Key::new().str(space::INSTANCE).str_prefix(p);
        return (KeyRange::prefix(pre.as_bytes()), 1);
    }
    if let Some(n) = &q.name {
        let pre = Key::new().str(space::BY_NAME).str(n);
        return (KeyRange::prefix(pre.as_bytes()), 2);
    }
    if !q.statuses.is_empty() {
        let lo = q.statuses.iter().map(|s| s.code()).min().unwrap_or(0);
        let hi = q.statuses.iter().map(|s| s.code()).max().unwrap_or(0);
        let begin = Key::new().str(space::BY_STATUS).uint(u64::from(lo));
        let end = Key::new().str(space::BY_STATUS).uint(u64::from(hi) + 1);
        return (KeyRange::new(begin.into_bytes(), end.into_bytes()), 2);
    }
    if q.created_from.is_some() || q.created_to.is_some() {
        let lo = q.created_from.map_or(0, |t| t.as_millis());
        let hi = q.created_to.map_or(u64::MAX, |t| t.as_millis());
        let begin = Key::new().str(space::BY_CREATED).uint(lo);
        let end = Key::new().str(space::BY_CREATED).uint(hi.saturating_add(1));
        let end = if hi == u64::MAX {
            crate::store::prefix_end(Key::new().str(space::BY_CREATED).as_bytes())
        } else {
            end.into_bytes()
        };
        return (KeyRange::new(begin.into_bytes(), end), 2);
    }
    let pre = Key::new().str(space::INSTANCE);
    (KeyRange::prefix(pre.as_bytes()), 1)
}

fn id_from_key(key: &[u8], pos: usize) -> Result<InstanceId, StoreError> {
    let bad = || StoreError::corrupt(key, perdure_core::codec::CodecError::Empty);
    let elems = Key::decode(key).map_err(|_| bad())?;
    match elems.into_iter().nth(pos) {
        Some(Elem::Str(s)) => InstanceId::new(s).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A continuation token: the key, hex-encoded.
pub fn encode_token(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a continuation token (`None` when it is not one).
pub fn decode_token(t: &str) -> Option<Vec<u8>> {
    // Hex digits only: `from_str_radix` alone would also take a sign (`"+0"`), so a token
    // the node never handed out would pass as one.
    if !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| t.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Whether the query's continuation token, if any, is one that [`query`] hands out for these
/// filters: a key inside the range the query scans. Any other token would silently restart
/// the listing at its first page.
pub fn valid_continuation(q: &InstanceQuery) -> bool {
    let Some(t) = q.continuation.as_deref() else {
        return true;
    };
    let (range, _) = driving_range(q);
    decode_token(t).is_some_and(|k| k >= range.begin && k < range.end)
}

/// One page of records matching a query, and the continuation token (the last key scanned,
/// hex-encoded; opaque to clients). At most `10 × page` index entries are scanned per call.
pub async fn query(
    tx: &mut dyn Transaction,
    q: &InstanceQuery,
) -> Result<(Vec<InstanceRecord>, Option<String>), StoreError> {
    let page = match q.page_size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let (mut range, pos) = driving_range(q);
    if let Some(k) = q.continuation.as_deref().and_then(decode_token) {
        let mut after = k;
        after.push(0);
        if after > range.begin {
            range.begin = after;
        }
    }
    let mut out = Vec::new();
    let mut scanned = 0usize;
    loop {
        let batch = tx
            .get_range(&range, RangeOptions::limit(page.saturating_mul(2)))
            .await?;
        if batch.is_empty() {
            return Ok((out, None));
        }
        let n = batch.len();
        for (k, _) in batch {
            scanned += 1;
            let id = id_from_key(&k, pos)?;
            if let Some(r) = load(tx, &id).await?
                && matches(q, &r)
            {
                out.push(r);
            }
            let mut next = k.clone();
            next.push(0);
            range.begin = next;
            if out.len() >= page || scanned >= page * 10 {
                return Ok((out, Some(encode_token(&k))));
            }
        }
        if n < page.saturating_mul(2) {
            return Ok((out, None));
        }
    }
}

/// Counts instances per status for a query's filters (paging ignored).
pub async fn count(
    tx: &mut dyn Transaction,
    q: &InstanceQuery,
) -> Result<BTreeMap<OrchestrationStatus, u64>, StoreError> {
    let mut out = BTreeMap::new();
    let only_status = q.created_from.is_none()
        && q.created_to.is_none()
        && q.instance_id_prefix.is_none()
        && q.name.is_none();
    if only_status {
        // Counting index keys: no record reads.
        let statuses: Vec<OrchestrationStatus> = if q.statuses.is_empty() {
            OrchestrationStatus::ALL.to_vec()
        } else {
            q.statuses.clone()
        };
        for s in statuses {
            let pre = Key::new().str(space::BY_STATUS).uint(u64::from(s.code()));
            let n = tx
                .get_range(&KeyRange::prefix(pre.as_bytes()), RangeOptions::default())
                .await?
                .len() as u64;
            if n > 0 {
                out.insert(s, n);
            }
        }
        return Ok(out);
    }
    let mut q = q.clone();
    q.page_size = MAX_PAGE as u32;
    q.continuation = None;
    loop {
        let (recs, cont) = query(tx, &q).await?;
        for r in recs {
            *out.entry(r.status).or_insert(0) += 1;
        }
        match cont {
            Some(c) => q.continuation = Some(c),
            None => return Ok(out),
        }
    }
}
