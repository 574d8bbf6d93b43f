//! History: the events of an instance's current execution, one key per event.

use perdure_core::{HistoryEvent, InstanceId};

use super::keys::Key;
use super::{chunk_span, clear_prefix, decode_value, put, space};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction, prefix_end};

fn prefix(id: &InstanceId) -> Key {
    Key::new().str(space::HISTORY).str(id.as_str())
}

/// Appends events at sequence numbers `first_seq..`.
pub fn append(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    first_seq: u64,
    events: &[HistoryEvent],
) -> Result<(), StoreError> {
    for (i, e) in events.iter().enumerate() {
        let k = prefix(id).uint(first_seq + i as u64);
        put(tx, k.as_bytes(), e)?;
    }
    Ok(())
}

/// Loads `limit` events (all when `None`) from sequence number `from`.
pub async fn load_page(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    from: u64,
    limit: Option<usize>,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let begin = prefix(id).uint(from).into_bytes();
    let end = prefix_end(prefix(id).as_bytes());
    let rows = tx
        .get_range(
            &KeyRange::new(begin, end),
            RangeOptions {
                limit,
                reverse: false,
            },
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        out.push(decode_value(tx, &k, &v).await?);
    }
    Ok(out)
}

/// Loads the history of the current execution: its first `len` events (the record's
/// `history_len`). Events stored beyond it belong to an episode being staged (or to one that
/// never published) and are not part of the history yet.
pub async fn load(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    len: u64,
) -> Result<Vec<HistoryEvent>, StoreError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let limit = usize::try_from(len).unwrap_or(usize::MAX);
    load_page(tx, id, 0, Some(limit)).await
}

/// Removes the whole history in one range clear (continue-as-new and restart cut it; purge
/// removes it in batches with [`purge_batch`]).
pub fn cut(tx: &mut dyn Transaction, id: &InstanceId) {
    clear_prefix(tx, prefix(id).as_bytes());
}

/// Removes the events from sequence number `from` on (a staged new execution wrote its
/// events over the start of the previous one's; this removes the rest of the previous one).
pub fn cut_from(tx: &mut dyn Transaction, id: &InstanceId, from: u64) {
    let begin = prefix(id).uint(from).into_bytes();
    let end = prefix_end(prefix(id).as_bytes());
    tx.clear_range(&chunk_span(&begin, &end));
    tx.clear_range(&KeyRange::new(begin, end));
}

/// Removes the first `limit` sequence numbers of the history (with their chunks), reading
/// only the first remaining event and the one after the cleared span: bounded work whatever
/// the history's length. Returns whether events remain (call again in a new transaction).
pub async fn purge_batch(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    limit: usize,
) -> Result<bool, StoreError> {
    let pre = prefix(id);
    let all = KeyRange::prefix(pre.as_bytes());
    let Some((first, _)) = tx
        .get_range(&all, RangeOptions::limit(1))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(false);
    };
    let seq = Key::decode(&first)
        .ok()
        .and_then(|elems| elems.get(2).and_then(|e| e.as_uint(2).ok()))
        .ok_or_else(|| StoreError::corrupt(&first, perdure_core::codec::CodecError::Empty))?;
    let end = match seq.checked_add(limit.max(1) as u64) {
        Some(next) => pre.uint(next).into_bytes(),
        None => all.end.clone(),
    };
    let rest = tx
        .get_range(&KeyRange::new(end.clone(), all.end), RangeOptions::limit(1))
        .await?;
    tx.clear_range(&KeyRange::new(first.clone(), end.clone()));
    tx.clear_range(&chunk_span(&first, &end));
    Ok(!rest.is_empty())
}
