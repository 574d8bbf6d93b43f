//! History: the events of an instance's current execution, one key per batch of events.
//!
//! A batch is the events one transaction appended (an episode's, or one stage of a staged
//! episode's), stored at `("h", instance, first_seq)`: its value is [`BATCH`] followed by the
//! encoded events. Stores written before batches hold one event per key (the same key shape,
//! the value the encoded event alone, which begins with the codec's version byte); both are
//! read. The batches of the current execution tile `0..history_len`: each starts where the
//! previous one ended. Other keys in that span are left over from an older execution or an
//! unpublished staged attempt (a new batch written at the same start replaces one; a
//! publish cuts what follows its events), always starting inside a batch read before them,
//! and are skipped.

use perdure_core::codec::{self, CodecError};
use perdure_core::{HistoryEvent, InstanceId};

use super::keys::Key;
use super::{chunk_span, clear_prefix, put_bytes, space, value_bytes};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction, prefix_end};

/// The first byte of a batch's value (never the codec's version byte, which begins the
/// value of a single event written before batches).
const BATCH: u8 = 0xB0;

/// The most encoded bytes of one batch: an append of more is stored as several batches. The
/// codec's decode limit counts the decoded size of each field (about twice the encoded size
/// of small events), so a batch near the store's transaction limit could commit and never
/// decode; batches of this size stay far below it, and loading reads them whole.
const BATCH_BYTES: usize = 1 << 20;

/// Rows of the first range read while loading; each further read takes twice as many, up to
/// [`MAX_ROWS_PER_READ`] (a history of many small batches, or of one event per key as
/// written before batches, in few round trips; one of large batches without reading far
/// past the page).
const FIRST_ROWS_PER_READ: usize = 32;
/// See [`FIRST_ROWS_PER_READ`].
const MAX_ROWS_PER_READ: usize = 1024;

fn prefix(id: &InstanceId) -> Key {
    Key::new().str(space::HISTORY).str(id.as_str())
}

/// Appends events at sequence numbers `first_seq..`, as one batch (several if they encode to
/// more than [`BATCH_BYTES`]). `first_seq` is the history's length before them (or the start
/// of a stage of it).
pub fn append(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    first_seq: u64,
    events: &[HistoryEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let key = prefix(id).uint(first_seq);
    let corrupt = |e| StoreError::corrupt(key.as_bytes(), e);
    let encoded = codec::encode(events).map_err(corrupt)?;
    if encoded.len() <= BATCH_BYTES || events.len() == 1 {
        let mut value = Vec::with_capacity(encoded.len() + 1);
        value.push(BATCH);
        value.extend_from_slice(&encoded);
        return put_bytes(tx, key.as_bytes(), &value);
    }
    // Runs of events that encode to at most BATCH_BYTES each (an event alone may be more).
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let n = codec::encode(e).map_err(corrupt)?.len();
        if i > start && bytes + n > BATCH_BYTES {
            append(tx, id, first_seq + start as u64, &events[start..i])?;
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    append(tx, id, first_seq + start as u64, &events[start..])
}

async fn decode_row(
    tx: &mut dyn Transaction,
    key: &[u8],
    raw: &[u8],
) -> Result<Vec<HistoryEvent>, StoreError> {
    let bytes = value_bytes(tx, key, raw).await?;
    let corrupt = |e| StoreError::corrupt(key, e);
    match bytes.split_first() {
        Some((&BATCH, events)) => codec::decode(events).map_err(corrupt),
        Some(_) => Ok(vec![codec::decode(&bytes).map_err(corrupt)?]),
        None => Err(corrupt(CodecError::Empty)),
    }
}

/// Loads the events from sequence number `from` (0 or a length the history had) up to
/// `len` (exclusive): at least `min_events` of them (whole batches), or all up to `len`.
/// Events stored at `len` and beyond belong to an episode being staged (or to one that never
/// published) and are not part of the history yet. Fewer events stored below `len` is
/// `Corrupt`, except that none at all from 0 is an empty history (removed whole, as a purge
/// does before it removes the record).
pub async fn load_page(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    from: u64,
    len: u64,
    min_events: usize,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let pre = prefix(id);
    let end = prefix_end(pre.as_bytes());
    let mut begin = pre.clone().uint(from).into_bytes();
    let mut next = from;
    let mut out = Vec::new();
    let mut rows_per_read = FIRST_ROWS_PER_READ;
    // Whether a left-over key was skipped, and whether any key was read.
    let (mut skipped, mut read_any) = (false, false);
    while next < len && out.len() < min_events {
        // No more rows than events still wanted, as each real key holds at least one; but
        // left-over keys hold none, so once one is seen the reads only grow.
        let wanted =
            (min_events - out.len()).min(usize::try_from(len - next).unwrap_or(usize::MAX));
        let limit = if skipped {
            rows_per_read
        } else {
            rows_per_read.min(wanted).max(1)
        };
        rows_per_read = (rows_per_read * 2).min(MAX_ROWS_PER_READ);
        let rows = tx
            .get_range(
                &KeyRange::new(begin.clone(), end.clone()),
                RangeOptions::limit(limit),
            )
            .await?;
        let more = rows.len() == limit;
        read_any |= !rows.is_empty();
        for (k, v) in rows {
            if next >= len || out.len() >= min_events {
                return Ok(out);
            }
            let want = pre.clone().uint(next);
            match k.as_slice().cmp(want.as_bytes()) {
                // Left over inside a batch already read: not part of this history.
                std::cmp::Ordering::Less => skipped = true,
                std::cmp::Ordering::Greater => {
                    return Err(StoreError::corrupt(
                        want.as_bytes(),
                        CodecError::Invalid(
                            "a history event below the history's length is missing",
                        ),
                    ));
                }
                std::cmp::Ordering::Equal => {
                    let batch = decode_row(tx, &k, &v).await?;
                    next += batch.len() as u64;
                    if batch.is_empty() || next > len {
                        return Err(StoreError::corrupt(
                            &k,
                            CodecError::Invalid("a history batch crosses the history's length"),
                        ));
                    }
                    out.extend(batch);
                }
            }
            begin = k;
            begin.push(0);
        }
        if !more && from == 0 && !read_any {
            // No history at all: removed whole (a purge in progress removes it before the
            // record), read as empty, as before batches.
            return Ok(out);
        }
        if !more && next < len && out.len() < min_events {
            // The keys ended below the length the record holds.
            return Err(StoreError::corrupt(
                pre.clone().uint(next).as_bytes(),
                CodecError::Invalid("the history ends below the history's length"),
            ));
        }
    }
    Ok(out)
}

/// Loads the history of the current execution: its first `len` events (the record's
/// `history_len`).
pub async fn load(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    len: u64,
) -> Result<Vec<HistoryEvent>, StoreError> {
    load_page(tx, id, 0, len, usize::MAX).await
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

/// Removes the keys of the first `limit` sequence numbers of the history (with their
/// chunks; a batch goes whole with its first sequence number), reading only the first
/// remaining key and the one after the cleared span: bounded work whatever
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
